"""A small, deterministic trainer for the zoo models (and any classifier ``nn.Module``).

Adam, cross-entropy (or BCE-with-logits for a one-output model), early stopping on the
validation loss with the best weights restored, an optional LR schedule, a tqdm progress bar
on stderr, and a :class:`History` of every epoch.

This trains *our* model, so unlike the explainers it does change the module (its weights,
and it is left in eval mode).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..labels import check_labels
from ..errors import DataError, InputError, ModelLoadError, ShapeError
from ..layout import resolve_layout
from ..models.base import check_array

__all__ = ["Trainer", "History", "SCHEDULES", "RECIPES"]

SCHEDULES = (None, "plateau", "cosine")

#: Trainer settings measured to train each zoo model well in little CPU time
#: (mnist1d_cnn on MNIST-1D, 4,000 training samples, one thread: 10-20 epochs, about 2-4 s,
#: test accuracy 0.918-0.968 over 12 initialisation seeds, 0.944 on average).
RECIPES: dict[str, dict] = {
    "mnist1d_cnn": {"epochs": 20, "batch_size": 64, "lr": 1e-2, "patience": 3, "schedule": "plateau"},
}
_FINAL = (nn.Softmax, nn.Sigmoid, nn.LogSoftmax)


@dataclass
class History:
    """What happened in :meth:`Trainer.fit`, one entry per epoch run.

    ``best_epoch`` is a 0-based index into the lists: the epoch whose weights the model holds
    after ``fit`` (lowest validation loss; the last epoch when there was no validation set).
    ``val_loss``/``val_acc`` hold NaN when there was no validation set.

    Attributes
    ----------
    train_loss, train_acc : list of float
        Mean training loss and accuracy of each epoch.
    val_loss, val_acc : list of float
        Validation loss and accuracy after each epoch (NaN without a validation set).
    lr : list of float
        The learning rate of each epoch.
    best_epoch : int
        0-based index of the epoch whose weights the model holds.
    stopped_early : bool
        Whether ``patience`` ended the run before ``epochs``.
    seconds : float
        Wall time of the run.

    Examples
    --------
    >>> from trustmap.zoo import History
    >>> h = History(train_loss=[0.9, 0.5], train_acc=[0.6, 0.8], val_loss=[float("nan")] * 2,
    ...             val_acc=[float("nan")] * 2, lr=[1e-3, 1e-3], best_epoch=1)
    >>> h.epochs, h.to_dict()["val_loss"]           # JSON-ready: NaN becomes None
    (2, [None, None])
    >>> History.from_dict(h.to_dict()).best_epoch
    1
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (NaN becomes None)."""
        d = asdict(self)
        for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            d[k] = [None if not math.isfinite(v) else float(v) for v in d[k]]
        d["epochs"] = self.epochs
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        """Inverse of :meth:`to_dict` (None becomes NaN)."""
        lists = {k: [math.nan if v is None else float(v) for v in d.get(k, [])]
                 for k in ("train_loss", "train_acc", "val_loss", "val_acc", "lr")}
        return cls(**lists, best_epoch=int(d.get("best_epoch", -1)), stopped_early=bool(d.get("stopped_early", False)),
                   seconds=float(d.get("seconds", 0.0)))


def _module_input(module: nn.Module) -> tuple[int, int, tuple | None]:
    """(rank, channels, spatial) the module takes: its ``input_shape`` or its first convolution."""
    shape = getattr(module, "input_shape", None)
    if shape is not None:
        shape = tuple(shape)
        return len(shape) - 1, int(shape[0]), tuple(shape[1:])
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return (1 if isinstance(m, nn.Conv1d) else 2), int(m.in_channels), None
    raise ModelLoadError("cannot tell what input this module takes", parameter="module",
                         expected="a module with an input_shape attribute or a Conv1d/Conv2d layer",
                         got=type(module).__name__, fix="set module.input_shape = (C, *spatial) before fit")


def _labels(y, n: int, n_out: int, parameter: str) -> torch.Tensor:
    """Class indices ``(N,)`` int64, checked against the head (one-hot rows are accepted)."""
    head = "a model with one output unit (binary: labels 0 and 1)" if n_out == 1 else f"a model with {n_out} outputs"
    return torch.from_numpy(check_labels(y, n, 2 if n_out == 1 else n_out, parameter=parameter, classes_desc=head))


class Trainer:
    """Train a classifier ``nn.Module`` on arrays.

    Parameters
    ----------
    epochs : int
        Most epochs to run.
    batch_size : int
    lr : float
        Adam's learning rate.
    weight_decay : float
        Adam's (L2) weight decay.
    patience : int | None
        Stop after this many epochs without a lower validation loss; ``None`` runs all epochs
        (the best weights are still restored).
    schedule : 'plateau' | 'cosine' | None
        'plateau' halves the LR once the validation loss (the training loss without validation)
        has not reached a new low for more than ``max(1, patience // 2)`` epochs (2 when
        ``patience`` is None); 'cosine' anneals it towards 0 over ``epochs``.
    val_fraction : float
        Share of the training data held out for validation when ``X_val`` is not given
        (0 means no validation and no early stopping).
    seed : int
        Seeds the split, the shuffling and dropout (on a forked RNG: the global RNG state is
        neither used nor changed). Weight initialisation is the caller's business.
    progress : bool
        tqdm bar on stderr with loss and accuracy.
    device : str | torch.device | None
        Where to train; the module is moved there. ``None`` keeps the module's device.

    Raises
    ------
    InputError
        A setting out of range (checked by :meth:`fit`): a non-positive count, a negative or
        non-finite rate, an unknown ``schedule``, ``val_fraction`` outside [0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> from trustmap import zoo
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(64, 40)).astype(np.float32), np.arange(64) % 2
    >>> net = zoo.mnist1d_cnn(n_classes=2, channels=4)
    >>> history = zoo.Trainer(epochs=2, batch_size=16, progress=False).fit(net, X, y)
    >>> history.epochs, net.training                # the module ends in eval mode
    (2, False)
    """

    def __init__(self, epochs: int = 30, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0,
                 patience: int | None = 5, schedule: str | None = "plateau", val_fraction: float = 0.1,
                 seed: int = 0, progress: bool = True, device=None) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.schedule = schedule
        self.val_fraction = val_fraction
        self.seed = seed
        self.progress = progress
        self.device = device

    # ---- checks -------------------------------------------------------------------
    def _check(self) -> None:
        def pos_int(name: str, allow_none: bool = False, minimum: int = 1) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise InputError("must be a positive integer", parameter=name, expected=f"an int >= {minimum}",
                                 got=repr(v), fix=f"pass {name}={max(minimum, 1)} or more")

        pos_int("epochs")
        pos_int("batch_size")
        pos_int("patience", allow_none=True, minimum=0)
        pos_int("seed", minimum=0)
        for name, low_ok in (("lr", False), ("weight_decay", True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
                v > 0 or (low_ok and v == 0))
            if not ok:
                raise InputError("must be a finite number " + (">= 0" if low_ok else "> 0"), parameter=name,
                                 expected="e.g. 0 or 1e-4" if low_ok else "e.g. 1e-3", got=repr(v),
                                 fix=f"pass a valid {name}")
        if self.schedule not in SCHEDULES:
            raise InputError("unknown LR schedule", parameter="schedule", expected="'plateau', 'cosine' or None",
                             got=repr(self.schedule), fix="pass schedule='plateau', 'cosine' or None")
        v = self.val_fraction
        if not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise InputError("must be in [0, 1)", parameter="val_fraction", expected="e.g. 0.1", got=repr(v),
                             fix="pass val_fraction=0.1 (or 0 with no validation)")

    def _to_internal(self, module: nn.Module, X, layout, parameter: str, dtype: torch.dtype) -> torch.Tensor:
        rank, channels, spatial = _module_input(module)
        X = check_array(X, parameter)
        lay = resolve_layout(tuple(X.shape), rank=rank, channels=channels, spatial=spatial, layout=layout,
                             parameter=parameter)
        t = lay.to_internal(X)
        if not isinstance(t, torch.Tensor):
            t = np.ascontiguousarray(t)
            t = torch.from_numpy(t if t.flags.writeable else t.copy())
        return t.to(dtype=dtype).contiguous()

    # ---- training -------------------------------------------------------------------
    def fit(self, module: nn.Module, X, y, X_val=None, y_val=None, layout=None) -> History:
        """Train ``module`` in place on ``(X, y)``; returns the :class:`History`.

        ``X`` may be in any layout trustmap understands (``(N, L)``, ``(N, L, C)``, ``(N, C, L)``,
        ``(N, H, W)``, ...; pass ``layout=`` when ambiguous); ``y`` holds class indices (or
        one-hot rows). A module ending in Softmax/Sigmoid is trained on the scores before it.
        The module ends in eval mode holding the weights of ``history.best_epoch``.

        Parameters
        ----------
        module : nn.Module
            The classifier to train (in place). Its input is read from ``module.input_shape`` or
            its first Conv1d/Conv2d.
        X : array-like
            Training inputs, one sample per row.
        y : array-like
            Class indices ``(N,)`` (or one-hot rows ``(N, K)``).
        X_val, y_val : array-like, optional
            A validation set (both or neither); otherwise ``val_fraction`` of ``X`` is held out.
        layout : str, optional
            The layout of ``X`` and ``X_val`` when their shape does not tell.

        Returns
        -------
        History
            One entry per epoch run, and the best epoch.

        Raises
        ------
        ModelLoadError
            ``module`` is not an ``nn.Module``, or its input cannot be told.
        InputError
            A bad setting, only one of ``X_val`` / ``y_val``, or no trainable parameters.
        DataError
            ``X`` not numeric, empty or not finite; too few samples to hold out a validation
            set; or the training loss became NaN or Inf.
        ShapeError
            The module fails on the data or does not return one row of class scores per sample,
            or the labels are not one per sample.
        LabelError
            Labels that are not class indices of the model's head.
        LayoutError
            ``X``'s shape does not fit the module's input, or fits more than one layout.

        Examples
        --------
        >>> import numpy as np
        >>> from trustmap import zoo
        >>> X, y = np.random.default_rng(1).normal(size=(40, 40)).astype(np.float32), np.arange(40) % 2
        >>> net = zoo.mnist1d_cnn(n_classes=2, channels=4)
        >>> h = zoo.Trainer(epochs=1, val_fraction=0.25, progress=False).fit(net, X, y)
        >>> h.best_epoch, len(h.val_loss)
        (0, 1)
        """
        self._check()
        if not isinstance(module, nn.Module):
            raise ModelLoadError("not a torch module", parameter="module", expected="a torch.nn.Module",
                                 got=type(module).__name__, fix="pass the nn.Module to train")
        if (X_val is None) != (y_val is None):
            raise InputError("X_val and y_val go together", parameter="X_val" if X_val is None else "y_val",
                             expected="both or neither", got="only one", fix="pass both X_val and y_val")
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise InputError("the module has no trainable parameters", parameter="module",
                             expected="parameters with requires_grad=True", got=type(module).__name__,
                             fix="unfreeze the parameters to train")
        device = torch.device(self.device) if self.device is not None else params[0].device
        module.to(device)
        dtype = params[0].dtype
        body = module
        if isinstance(module, nn.Sequential) and len(module) > 1 and isinstance(module[-1], _FINAL):
            body = module[:-1]  # shares the parameters; train on the pre-activation scores

        x = self._to_internal(module, X, layout, "X", dtype)
        n_out = self._n_outputs(body, x[:2].to(device))
        yt = _labels(y, len(x), n_out, "y")
        if X_val is not None:
            xv = self._to_internal(module, X_val, layout, "X_val", dtype)
            yv = _labels(y_val, len(xv), n_out, "y_val")
        else:
            xv = yv = None

        gen = torch.Generator().manual_seed(int(self.seed))
        if xv is None and self.val_fraction > 0:
            n_val = int(round(len(x) * self.val_fraction))
            if n_val < 1 or n_val >= len(x):
                raise DataError("too few samples to hold some out for validation", parameter="val_fraction",
                                expected="at least one training and one validation sample",
                                got=f"{len(x)} samples x {self.val_fraction}",
                                fix="pass X_val/y_val, more data, or val_fraction=0")
            perm = torch.randperm(len(x), generator=gen)
            xv, yv = x[perm[:n_val]], yt[perm[:n_val]]
            x, yt = x[perm[n_val:]], yt[perm[n_val:]]

        x, yt = x.to(device), yt.to(device)
        if xv is not None:
            xv, yv = xv.to(device), yv.to(device)
        devices = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(self.seed))
                history = self._loop(module, body, x, yt, xv, yv, n_out, gen)
        finally:
            module.eval()
        return history

    @staticmethod
    def _n_outputs(body: nn.Module, probe: torch.Tensor) -> int:
        modes = [(m, m.training) for m in body.modules()]
        try:
            body.eval()
            with torch.no_grad():
                out = body(probe)
        except Exception as exc:
            raise ShapeError(f"the module fails on the data ({type(exc).__name__}: {str(exc)[:200]})",
                             parameter="X", expected="inputs the module accepts", got=f"shape {tuple(probe.shape[1:])}",
                             fix="check the data's length/size against the module's input_shape") from exc
        finally:
            for m, mode in modes:
                m.training = mode
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim != 2:
            raise ShapeError("the module must return one row of class scores per sample", parameter="module",
                             expected="output (N, K)", got=f"output shape {tuple(out.shape)}",
                             fix="end the network with a Linear layer")
        return int(out.shape[1])

    def _loss(self, out: torch.Tensor, y: torch.Tensor, n_out: int) -> torch.Tensor:
        if n_out == 1:
            return F.binary_cross_entropy_with_logits(out[:, 0], y.to(out.dtype))
        return F.cross_entropy(out, y)

    @staticmethod
    def _correct(out: torch.Tensor, y: torch.Tensor, n_out: int) -> int:
        pred = (out[:, 0] > 0).long() if n_out == 1 else out.argmax(1)
        return int((pred == y).sum())

    def _batches(self, n: int, gen: torch.Generator | None) -> list[torch.Tensor]:
        order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
        parts = list(torch.split(order, int(self.batch_size)))
        if len(parts) > 1 and len(parts[-1]) == 1:  # BatchNorm cannot train on one sample
            parts[-2] = torch.cat(parts[-2:])
            parts.pop()
        return parts

    def _evaluate(self, body, x, y, n_out) -> tuple[float, float]:
        body.eval()
        total, correct = 0.0, 0
        with torch.no_grad():
            for idx in self._batches(len(x), None):
                xb, yb = x[idx], y[idx]
                out = body(xb)
                total += float(self._loss(out, yb, n_out)) * len(idx)
                correct += self._correct(out, yb, n_out)
        return total / len(x), correct / len(x)

    def _loop(self, module, body, x, y, xv, yv, n_out, gen) -> History:
        from tqdm.auto import tqdm

        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=self.lr,
                               weight_decay=self.weight_decay)
        sched = None
        if self.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, threshold=0.0,
                                                               patience=max(1, (self.patience or 4) // 2))
        elif self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(self.epochs))
        hist = History()
        best_loss, best_state, since_best = math.inf, None, 0
        t0 = time.perf_counter()
        bar = tqdm(total=int(self.epochs), desc="train", unit="epoch", file=sys.stderr,
                   disable=not self.progress, leave=True, dynamic_ncols=True)
        try:
            for epoch in range(int(self.epochs)):
                lr = float(opt.param_groups[0]["lr"])
                module.train()
                total, correct = 0.0, 0
                for idx in self._batches(len(x), gen):
                    xb, yb = x[idx], y[idx]
                    opt.zero_grad(set_to_none=True)
                    out = body(xb)
                    loss = self._loss(out, yb, n_out)
                    if not torch.isfinite(loss):
                        raise DataError(f"the training loss became {float(loss)} in epoch {epoch + 1}",
                                        parameter="lr", expected="a finite loss", got=float(loss),
                                        fix="lower the learning rate or standardize the inputs")
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    correct += self._correct(out.detach(), yb, n_out)
                hist.train_loss.append(total / len(x))
                hist.train_acc.append(correct / len(x))
                hist.lr.append(lr)
                if xv is not None:
                    vl, va = self._evaluate(body, xv, yv, n_out)
                else:
                    vl, va = math.nan, math.nan
                hist.val_loss.append(vl)
                hist.val_acc.append(va)
                monitor = vl if xv is not None else hist.train_loss[-1]
                if xv is None:
                    hist.best_epoch = epoch  # nothing to select on: keep the last weights
                elif monitor < best_loss:
                    best_loss, since_best, hist.best_epoch = monitor, 0, epoch
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    since_best += 1
                if sched is not None:
                    if self.schedule == "plateau":
                        sched.step(monitor)
                    else:
                        sched.step()
                post = {"loss": f"{hist.train_loss[-1]:.4f}", "acc": f"{hist.train_acc[-1]:.3f}"}
                if xv is not None:
                    post.update(val_loss=f"{vl:.4f}", val_acc=f"{va:.3f}")
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if xv is not None and self.patience is not None and since_best >= self.patience:
                    hist.stopped_early = epoch + 1 < int(self.epochs)
                    break
        finally:
            bar.close()
        if best_state is not None:
            module.load_state_dict(best_state)
        hist.seconds = time.perf_counter() - t0
        return hist
