"""The report's counterfactual section: the folders ``trustmap counterfactual`` writes
(``counterfactuals.npz`` + ``.json``, named ``counterfactuals`` in ``run.json``'s files): a table of
every sample (original class and probability, target, new class and probability, window) and the
original and counterfactual overlaid, the changed region shaded, for the first samples."""

from __future__ import annotations

import numpy as np

from .html import Run, _class_names, _esc, _figure, _fmt, _Section, _table

__all__ = ["counterfactual_section", "SHOWN"]

#: samples drawn as figures (the table lists every sample up to ``ROWS``)
SHOWN = 4
ROWS = 50


def counterfactual_section(run: Run) -> _Section | None:
    """The "Counterfactuals" section, or None when the folder has none."""
    rel = (run.manifest.get("files") or {}).get("counterfactuals")
    if rel is None:
        return None
    from ..explain.counterfactual import Counterfactual

    cf = Counterfactual.load(run.root / rel)
    names = _class_names(run) or [str(c) for c in (run.manifest.get("classes") or [])] or None
    nm = lambda k: _esc(names[int(k)]) if names and int(k) < len(names) else str(int(k))  # noqa: E731
    prob = lambda a, i: "n/a" if a is None else _fmt(float(a[i]), 3)  # noqa: E731
    n = len(cf)
    rate = float(np.mean(cf.success)) if n else float("nan")
    params = cf.params or {}
    body = [f'<p class="note">{n} sample(s); method {_esc(params.get("method", "native_guide"))} (Delaney et al. '
            "2021): for each sample, the window with the most evidence of its nearest unlike neighbour (a real "
            "reference sample of the target class) is copied in, the window growing until the model predicts the "
            f"target. The target is reached for {_fmt(100 * rate, 3)} % of the samples; mean window "
            f"{_fmt(float(np.mean(cf.window)) if n else None, 3)} positions.</p>"]
    rows = []
    for i in range(min(n, ROWS)):
        rows.append([str(i), f"{nm(cf.original_prediction[i])}", prob(cf.original_probability, i),
                     f"{nm(cf.target[i])}", f"{nm(cf.new_prediction[i])}", prob(cf.new_probability, i),
                     "yes" if cf.success[i] else "<b>no</b>", str(int(cf.window[i])),
                     str(int(cf.neighbour_index[i]))])
    body.append(_table(["sample", "original class", "p", "target", "new class", "new p", "reached", "window",
                        "neighbour"], rows, num_from=2))
    if n > ROWS:
        body.append(f'<p class="note">First {ROWS} of {n} samples listed.</p>')
    for i in range(min(n, SHOWN)):
        title = cf.title(i, names)
        body.append(_figure(lambda i=i: cf.plot(i, class_names=names),
                            f"Sample {i}: the input and its counterfactual overlaid, the changed region shaded; "
                            f"{title}", f"Sample {i}: {title}. Shaded: the region copied from the neighbour."))
    return _Section("counterfactuals", "Counterfactuals", "".join(body))
