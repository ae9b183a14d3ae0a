"""What a masked entry is replaced by: the localizer's baselines, built in ONE function.

The names mean what they mean in the one baseline specification (:mod:`trustmap.baselines`):

``'zero'``
    0 (dnn-locate's choice).
``'dataset_mean'``
    The *training-set* per-channel mean: one value per channel, averaged over every sample and
    position of the localizer's training split (the reference set of :mod:`trustmap.baselines`;
    the same constant for every input). The trust-mode default.
``'mean'``
    Each sample's own per-channel mean over its positions (a flat signal per channel), as in
    :mod:`trustmap.baselines`. (Localizer records saved before this name was aligned with the
    specification used ``'mean'`` for the training-set mean: :func:`legacy_name` maps them.)
``'blur'``
    A Gaussian blur of the input itself (``sigma`` in samples).
``'noise'``
    Per-channel Gaussian noise with the training-set per-channel mean and standard deviation.
    (Unlike :mod:`trustmap.baselines`, whose 'noise' uses each sample's own statistics; its
    noise-free reference, :data:`REFERENCE`, is 'dataset_mean'.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import blur

__all__ = ["BASELINES", "BaselineStats", "baseline", "legacy_name", "REFERENCE"]

BASELINES = ("zero", "dataset_mean", "mean", "blur", "noise")


#: the noise-free baseline a baseline's reference risk is computed on ('noise': its mean)
REFERENCE = {"noise": "dataset_mean"}


def legacy_name(kind: str) -> str:
    """The baseline name of a record saved before the names followed :mod:`trustmap.baselines`
    (``'mean'`` then meant the training-set mean, now ``'dataset_mean'``), with a DeprecationWarning."""
    if kind == "mean":
        import warnings

        warnings.warn("this localizer record names its baseline 'mean', the old name of the training-set mean; it "
                      "is read as 'dataset_mean' ('mean' now means each sample's own mean, as in "
                      "trustmap.baselines). Save the localizer again to update the record.", DeprecationWarning,
                      stacklevel=3)
        return "dataset_mean"
    return kind


@dataclass
class BaselineStats:
    """The training-set statistics a baseline needs: per-channel mean and std ``(1, C, 1, ...)``."""

    train_mean: torch.Tensor
    train_std: torch.Tensor
    blur_sigma: float

    @classmethod
    def from_training(cls, x: torch.Tensor, blur_sigma: float) -> "BaselineStats":
        dims = (0,) + tuple(range(2, x.ndim))
        return cls(x.mean(dim=dims, keepdim=True)[0:1].detach().clone(),
                   x.std(dim=dims, keepdim=True)[0:1].detach().clone(), float(blur_sigma))

    def to(self, **kw) -> "BaselineStats":
        return BaselineStats(self.train_mean.to(**kw), self.train_std.to(**kw), self.blur_sigma)


def baseline(x: torch.Tensor, kind: str, stats: BaselineStats, gen: torch.Generator | None = None,
             rows: tuple[int, int, int] | None = None, *, explicit_zero: bool = False) -> torch.Tensor | None:
    """The baseline of ``kind`` for ``x`` ``(N, C, *spatial)``; None for 'zero' (unless ``explicit_zero``).

    'noise' draws from ``gen`` (or the global generator); ``rows=(n, a, b)``: ``x`` is rows ``a:b`` of
    a batch of ``n`` (data-parallel shard), the noise is drawn for the whole batch and sliced, as one
    process would draw it.
    """
    if kind == "zero":
        return torch.zeros_like(x) if explicit_zero else None
    if kind == "dataset_mean":
        return stats.train_mean.to(x.dtype).expand_as(x)
    if kind == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x)
    if kind == "blur":
        return blur(x, stats.blur_sigma)
    shape = tuple(x.shape) if rows is None else (rows[0],) + tuple(x.shape[1:])
    noise = torch.randn(shape, generator=gen, dtype=x.dtype, device=gen.device) if gen is not None else \
        torch.randn(shape, dtype=x.dtype, device=x.device)
    if rows is not None:
        noise = noise[rows[1]:rows[2]]
    noise = noise.to(x.device)
    return stats.train_mean.to(x.dtype) + stats.train_std.to(x.dtype) * noise
