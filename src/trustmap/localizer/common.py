"""Small pieces the localizer's modules share: label checks, splits, seeds, logits."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from ..models import Model
from ..models.base import row_slices

__all__ = ["is_number", "mix", "log_odds", "safe_fingerprint", "logits", "labels", "stratified_split", "chunks"]


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def mix(*values: int) -> int:
    """A 63-bit seed from integers (a hash: independent streams for each combination)."""
    h = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def log_odds(logits_: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p_y - log(1 - p_y) = z_y - logsumexp_{k != y} z_k, per sample."""
    z_y = logits_.gather(1, y[:, None])[:, 0]
    others = logits_.masked_fill(torch.nn.functional.one_hot(y, logits_.shape[1]).bool(), float("-inf"))
    return z_y - torch.logsumexp(others, dim=1)


def safe_fingerprint(model: Model) -> str | None:
    try:
        return model.fingerprint()
    except Exception:
        return None


def logits(model: Model, t: torch.Tensor) -> np.ndarray:
    """The classifier's logits for ``t`` (internal layout) as float64 numpy, chunked, no autograd."""
    with model.frozen(), torch.inference_mode():
        outs = [model.logits_t(t[s]) for s in model.chunks(len(t), t[0].numel())]
    return torch.cat(outs).detach().cpu().to(torch.float64).numpy()


def chunks(n: int, per_sample: int) -> list[slice]:
    """Slices of ``n`` samples sized for a ~256 MB working set."""
    return row_slices(n, min(4096, int((256 * 2**20) // max(1, per_sample * 4 * 64))))


def labels(y, n: int, k: int, parameter: str) -> torch.Tensor:
    """Integer class indices ``(N,)`` from integer labels or one-hot rows (:func:`trustmap.labels.check_labels`)."""
    from ..labels import check_labels

    return torch.from_numpy(check_labels(y, n, k, parameter=parameter, classes_desc=f"a model with {k} classes"))


def stratified_split(y: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split indices into parts of the given fractions, class by class (shuffled, seeded)."""
    parts: list[list[int]] = [[] for _ in fractions]
    f = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        cuts = np.round(np.cumsum(f)[:-1] * len(idx)).astype(int)
        for j, chunk in enumerate(np.split(idx, cuts)):
            parts[j].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
