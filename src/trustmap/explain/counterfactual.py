"""Counterfactual explanations: the smallest change of an input, borrowed from a real sample of another
class, that makes the model predict that class.

``native_guide`` (Delaney, Greene & Keane, ICCBR 2021; TSInterpret's ``NativeGuideCF`` with
``method='NUN_CF'``): for each input, its nearest unlike neighbour (NUN: the closest reference sample
labelled with the target class) is found; the NUN's attribution map for the target class says where
the NUN's evidence lies; the window of length ``L`` with the most attribution is copied from the NUN
into the input, with ``L`` growing until the model predicts the target. All windows lengths of all
inputs are scored as one batched plan (the reference code loops over inputs and lengths). Rank-generic:
windows are ``L`` positions long in 1D and ``L × L`` boxes in 2D; all channels of a window are copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import _io
from ..errors import InputError, RunDirError, ShapeError, TargetError
from ..models import load_model
from .base import check_choice, chunk_rows, row_chunks

__all__ = ["counterfactual", "Counterfactual", "COUNTERFACTUAL_METHODS"]

COUNTERFACTUAL_METHODS = ("native_guide",)


@dataclass
class Counterfactual:
    """Counterfactuals of a batch, in the caller's layout.

    Attributes
    ----------
    x : array
        The inputs.
    counterfactuals : array
        The changed inputs (shape and layout of ``x``).
    changed : bool array
        Where ``counterfactuals`` differs from ``x`` by construction (the copied window, all channels).
    original_prediction, new_prediction, target : (N,) int arrays
    success : (N,) bool
        Whether the model predicts ``target`` for the counterfactual.
    neighbour_index : (N,) int
        Index of each input's nearest unlike neighbour in ``reference``.
    window : (N,) int
        The window length ``L`` used (positions per spatial axis).
    original_probability, new_probability : (N,) float arrays, optional
        The model's probability of the originally predicted class for ``x`` and of the new predicted
        class for the counterfactual.
    """

    x: np.ndarray
    counterfactuals: np.ndarray
    changed: np.ndarray
    original_prediction: np.ndarray
    new_prediction: np.ndarray
    target: np.ndarray
    success: np.ndarray
    neighbour_index: np.ndarray
    window: np.ndarray
    layout: str
    params: dict = field(default_factory=dict)
    original_probability: np.ndarray | None = None
    new_probability: np.ndarray | None = None

    _ARRAYS = ("x", "counterfactuals", "changed", "original_prediction", "new_prediction", "target", "success",
               "neighbour_index", "window", "original_probability", "new_probability")

    def __len__(self) -> int:
        return len(self.x)

    def save(self, path) -> Path:
        """Write ``path`` (``.npz``: the arrays) and its ``.json`` sidecar (layout, parameters), atomically;
        no pickle."""
        path = Path(path)
        arrays = {k: np.asarray(getattr(self, k)) for k in self._ARRAYS if getattr(self, k) is not None}
        with _io.atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        _io.write_json(path.with_suffix(".json"), {"kind": "counterfactual", "layout": self.layout,
                                                   "params": _io.to_jsonable(self.params), "n": len(self),
                                                   "success_rate": float(np.mean(self.success)) if len(self) else None})
        return path

    @classmethod
    def load(cls, path) -> "Counterfactual":
        """Read what :meth:`save` wrote; a missing or corrupt file raises ``RunDirError`` naming it."""
        path = Path(path)
        for p in (path, path.with_suffix(".json")):
            if not p.is_file():
                raise RunDirError(f"missing {p.name} (counterfactuals)", parameter="path", expected=str(p),
                                  got="no such file", fix="run `trustmap counterfactual` again")
        try:
            meta = _io.read_json(path.with_suffix(".json"))
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return cls(layout=str(meta["layout"]), params=dict(meta.get("params") or {}),
                       **{k: arrays.get(k) for k in cls._ARRAYS})
        except Exception as exc:
            raise RunDirError(f"{path.name} (counterfactuals) is corrupt: {type(exc).__name__}: {exc}",
                              parameter="path", got=str(path), fix="run `trustmap counterfactual` again") from exc

    def title(self, i: int, class_names=None) -> str:
        """``'class A (p=0.97) -> class B (p=0.81)'`` for sample ``i`` (target said when not reached)."""
        nm = lambda k: str(class_names[int(k)]) if class_names and int(k) < len(class_names) else str(int(k))  # noqa: E731
        p = lambda a: "" if a is None else f" (p={float(a[i]):.2f})"  # noqa: E731
        text = (f"{nm(self.original_prediction[i])}{p(self.original_probability)} -> "
                f"{nm(self.new_prediction[i])}{p(self.new_probability)}")
        return text + ("" if self.success[i] else f"; target {nm(self.target[i])} not reached")

    def plot(self, i: int = 0, class_names=None, max_channels: int = 6):
        """A figure of sample ``i``: the input and its counterfactual overlaid, the changed region shaded
        (1D: one row per channel, at most ``max_channels``, changed channels first; 2D: the input, the
        counterfactual with the changed box shaded, and their difference)."""
        import matplotlib.pyplot as plt

        from ..layout import Layout

        lay = Layout(self.layout)
        x = lay.to_internal(self.x[i:i + 1])[0]
        cf = lay.to_internal(self.counterfactuals[i:i + 1])[0]
        ch = lay.to_internal(self.changed[i:i + 1])[0]
        x, cf, ch = (np.asarray(v) for v in (x, cf, ch))
        title = self.title(i, class_names)
        if x.ndim == 2:
            order = sorted(range(x.shape[0]), key=lambda k: not ch[k].any())[:max_channels]
            c = len(order)
            fig, axes = plt.subplots(c, 1, figsize=(8, 1.6 * c + 0.6), squeeze=False, sharex=True)
            for row, k in enumerate(order):
                ax = axes[row, 0]
                if x.shape[0] > 1:
                    ax.set_ylabel(f"ch {k}", fontsize=8)
                ax.plot(x[k], color="0.3", lw=1, label="input")
                ax.plot(cf[k], color="tab:red", lw=1, label="counterfactual")
                idx = np.nonzero(ch[k])[0]
                if len(idx):
                    ax.axvspan(idx[0] - 0.5, idx[-1] + 0.5, color="tab:red", alpha=0.12)
            axes[0, 0].legend(loc="upper right", fontsize=8)
            axes[0, 0].set_title(title)
            return fig
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
        img = lambda v: v[0] if v.shape[0] == 1 else np.moveaxis(v, 0, -1)  # noqa: E731
        axes[0].imshow(img(x), cmap="gray")
        axes[1].imshow(img(cf), cmap="gray")
        shade = np.zeros((*ch.shape[1:], 4))
        shade[ch.any(0)] = (0.84, 0.15, 0.16, 0.35)  # the changed box, shaded red
        axes[1].imshow(shade)
        lim = float(np.abs(cf - x).sum(0).max()) or 1.0
        axes[2].imshow((cf - x).sum(0), cmap="RdBu_r", vmin=-lim, vmax=lim)
        for ax, t in zip(axes, ("input", "counterfactual (changed: shaded)", "change")):
            ax.set_title(t)
            ax.axis("off")
        fig.suptitle(title)
        return fig


def counterfactual(model, X, target=None, method: str = "native_guide", reference=None, y_reference=None, *,
                   layout=None, importance: str = "saliency", importance_params: dict | None = None) -> Counterfactual:
    """Counterfactuals of ``X`` (see the module docstring).

    Parameters
    ----------
    model : anything :func:`trustmap.load_model` takes (gradients are needed for a gradient
        ``importance``; pass ``importance='occlusion'`` for forward-only models).
    X : array
        The inputs, in any layout the model accepts.
    target : None, int or one int per sample
        The class to reach; ``None``: each input's second most probable class.
    method : 'native_guide'
    reference, y_reference : array, labels
        Real samples (e.g. the training set, same layout as ``X``) and their labels; the neighbours
        come from here.
    importance : str
        The registered explainer giving the neighbours' evidence (TSInterpret uses a CAM).
    importance_params : dict, optional
        Parameters of that explainer.
    layout : str, optional
        Layout of ``X`` (and ``reference``) when the shape is ambiguous.

    Returns
    -------
    Counterfactual
        The changed inputs in ``X``'s layout, where they changed, the predictions before and
        after, and whether each reached its target.

    Raises
    ------
    InputError
        No ``reference`` / ``y_reference``, ``y_reference`` of another length, or an unknown
        ``method`` or ``importance``.
    ShapeError
        ``reference`` samples of another shape than ``X``'s.
    TargetError
        A target the model does not have (or no second class to aim at).

    Examples
    --------
    >>> import trustmap
    >>> cf = trustmap.counterfactual(model, X_test[:8], reference=X_train, y_reference=y_train)
    >>> cf.success.mean(), cf.new_prediction                # how many flipped, and to what
    """
    check_choice(method, COUNTERFACTUAL_METHODS, "method")
    if reference is None or y_reference is None:
        raise InputError("native_guide needs reference samples and their labels", parameter="reference",
                         expected="reference=X_train, y_reference=y_train", got=None,
                         fix="pass real samples of the classes (e.g. the training set) and their labels")
    from . import get_explainer

    m = load_model(model)
    t, lay = m.to_internal(X, layout)
    r, _ = m.to_internal(reference, layout if layout is not None else lay.name, parameter="reference")
    if tuple(r.shape[1:]) != tuple(t.shape[1:]):
        raise ShapeError("reference samples do not match X", parameter="reference",
                         expected=f"samples shaped like X's {tuple(t.shape[1:])} (internal)",
                         got=tuple(r.shape[1:]), fix="pass reference samples of the same shape and layout as X")
    yr = np.asarray(y_reference).reshape(-1)
    if len(yr) != len(r):
        raise InputError("y_reference has the wrong length", parameter="y_reference",
                         expected=f"{len(r)} labels (one per reference sample)", got=len(yr),
                         fix="pass the labels of the reference samples")
    n = len(t)
    with m.frozen():
        with torch.inference_mode():
            probs = torch.cat([m.probs_t(t[s]) for s in row_chunks(n, chunk_rows(m, t))])
        pred = probs.argmax(1)
        if target is None:
            if probs.shape[1] < 2:  # pragma: no cover - models have two classes at least
                raise TargetError("no second class", parameter="target", fix="pass target=")
            tg = probs.topk(2, dim=1).indices[:, 1]
        else:
            tg = torch.as_tensor(m.resolve_targets(target, t), device=t.device)
        # nearest unlike neighbours: reference samples labelled with the target class
        yr_t = torch.as_tensor(yr, device=t.device)
        missing = sorted(set(tg.tolist()) - set(yr.tolist()))
        if missing:
            raise TargetError("no reference sample has the target class", parameter="target",
                              expected="classes present in y_reference", got=missing,
                              fix="add reference samples of those classes, or pick another target")
        d = torch.cdist(t.flatten(1).double(), r.flatten(1).double())
        d = torch.where(yr_t[None] == tg[:, None], d, torch.full_like(d, float("inf")))
        nun_idx = d.argmin(1)
        nun = r[nun_idx]
        w = get_explainer(importance, **(importance_params or {})).explain(m, nun.cpu().numpy(), target=tg.cpu().numpy(),
                                                                            layout="NCL" if t.ndim == 3 else "NCHW")
        weight = torch.as_tensor(np.abs(w.maps), dtype=torch.float64, device=t.device).sum(1, keepdim=True)
        sp = tuple(t.shape[2:])
        lengths = np.arange(1, min(sp) + 1)
        # for each sample and window length: the start of the window with the most evidence
        pool = F.avg_pool1d if t.ndim == 3 else F.avg_pool2d
        starts = []
        for L in lengths:
            s = pool(weight, int(L), stride=1).flatten(1).argmax(1)  # (N,) flat index over the pooled grid
            out_sp = tuple(v - int(L) + 1 for v in sp)
            starts.append(torch.stack(torch.unravel_index(s, out_sp), 1) if len(sp) > 1 else s[:, None])
        starts = torch.stack(starts, 1)  # (N, n_L, rank)
        pos = [torch.arange(v, device=t.device) for v in sp]
        lengths_t = torch.as_tensor(lengths, device=t.device)

        def boxes(si, li):
            st = starts[si, li]
            L = lengths_t[li]
            mk = torch.ones((len(si), 1, *sp), dtype=torch.bool, device=t.device)
            for ax in range(len(sp)):
                inside = (pos[ax][None] >= st[:, ax:ax + 1]) & (pos[ax][None] < st[:, ax:ax + 1] + L[:, None])
                shape = [len(si), 1] + [1] * len(sp)
                shape[2 + ax] = sp[ax]
                mk = mk & inside.view(shape)
            return mk

        n_l = len(lengths)
        hit = torch.zeros((n, n_l), dtype=torch.bool, device=t.device)
        with torch.inference_mode():
            for rows in row_chunks(n * n_l, chunk_rows(m, t)):
                rr = torch.arange(rows.start, rows.stop, device=t.device)
                si, li = rr // n_l, rr % n_l
                xr = torch.where(boxes(si, li), nun[si], t[si])
                hit[si, li] = m.logits_t(xr).argmax(1) == tg[si]
        success = hit.any(1)
        first = torch.where(success, hit.int().argmax(1), torch.full_like(success, n_l - 1, dtype=torch.long))
        idx = torch.arange(n, device=t.device)
        changed = boxes(idx, first).expand_as(t)
        cf = torch.where(changed, nun, t)
        with torch.inference_mode():
            new_probs = torch.cat([m.probs_t(cf[s]) for s in row_chunks(n, chunk_rows(m, t))])
        new_pred = new_probs.argmax(1)
    to_np = lambda v: np.ascontiguousarray(lay.from_internal(v.detach().cpu().numpy()))  # noqa: E731
    x_np = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    return Counterfactual(x=x_np, counterfactuals=to_np(cf), changed=to_np(changed), layout=lay.name,
                          original_prediction=pred.cpu().numpy(), new_prediction=new_pred.cpu().numpy(),
                          target=tg.cpu().numpy(), success=(new_pred == tg).cpu().numpy(),
                          neighbour_index=nun_idx.cpu().numpy(), window=lengths[first.cpu().numpy()],
                          original_probability=probs.gather(1, pred[:, None])[:, 0].double().cpu().numpy(),
                          new_probability=new_probs.gather(1, new_pred[:, None])[:, 0].double().cpu().numpy(),
                          params={"method": method, "importance": importance, "importance_params": importance_params})
