"""The TRUST localizer as an estimator: ``Localizer(...).fit(model, X, y)``.

Two modes:

``mode='trust'`` (default)
    One mask network for the whole τ path: every training sample draws its own τ (log-uniform
    over the path's range) and the masks for every τ come from the same softmax, so they are
    nested (τ ≤ τ' ⇒ δ_τ ≤ δ_τ') and no τ depends on another's training history. The data
    are split into training / calibration / held-out parts; τ is the smallest on the grid
    whose calibration R² reaches the target with confidence; the R² (with its interval) is
    reported on the held-out part, and the reported path is made monotone (isotonic).

``mode='paper'``
    The method as dnn-locate does it: τ swept in order, a localizer trained for each (from a
    fresh start — dnn-locate 0.2 carried its backbone's weights from τ to τ, which makes each
    τ's result depend on the ones before),
    ``objective='paper'`` (maximize the classifier's cross-entropy on x ⊙ (1 − δ)), zero
    baseline, R² on ``X_val`` (on the training data when none is given), the 'auto' target
    from one random permutation of the labels, stop at the first τ whose R² reaches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .. import _io
from ..attribution import Attribution
from ..errors import (DataError, InputError, NotFittedError, RunDirError, ShapeError, TargetError,
                      UnsupportedError)
from ..layout import Layout, resolve_layout
from ..models import Model, load_model
from ..models.base import check_array
from . import distributed as _distributed
from . import r2 as _r2
from .model import MaskNet, apply_mask, blur, check_sizes, default_backbone, paper_backbone

__all__ = ["Localizer"]

_FORMAT = "trustmap.localizer/1"
_CKPT_FORMAT = "trustmap.localizer-checkpoint/1"
OBJECTIVES = ("remove", "prior", "paper")
BASELINES = ("zero", "mean", "blur", "noise")
MODES = ("trust", "paper")
BUDGETS = ("total", "per_channel")
CI_METHODS = ("bootstrap", "delta")
HEAD_LR_MULT = 10.0

#: the defaults that ``'auto'`` resolves to in each mode (trust: chosen by benchmarks/bench_localizer.py)
TRUST_DEFAULTS = {"objective": "remove", "baseline": "mean", "sink": True, "sparsity": 0.5}
PAPER_DEFAULTS = {"objective": "paper", "baseline": "zero", "sink": False, "sparsity": 0.0}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


class Localizer:
    """The TRUST localizer (Dai, Shen, Chen, Li, Pan, *Ann. Appl. Stat.* 2023), done right.

    Learns a network ``g`` so that the mask ``δ(x) = tanh(relu(τ·softmax(BN(g(x)))))`` (every
    entry < 1, sum ≤ τ) removes what the frozen classifier relies on: on
    ``x ⊙ (1 − δ) + δ ⊙ baseline`` the classifier loses its predictive power. The generalized
    partial R² = 1 − risk(clean) / risk(masked) says how much of it the located features carry.

    Parameters
    ----------
    tau : 'auto' | float | sequence of floats
        The τ path (the mask's budget). 'auto': 12 values, geometric, from 0.2 % to 10 % of the
        mask's entries (at least 0.5). A single float fits that τ only.
    target_r2 : 'auto' | float in (0, 1]
        The R² the chosen τ must reach. 'auto' is the chance level (the R² when the masked
        predictions carry no information about the labels); it is reached when the calibration
        data cannot tell the masked classifier from chance (its upper bound reaches it). A float
        target is reached when the R²'s lower confidence bound reaches it. When no τ reaches it,
        ``tau_`` is the smallest τ whose masked risk is as high as the path's highest (within its
        interval), with a warning.
    r_metric : 'acc' | 'loss'
        Risk for R²: 0/1 error or cross-entropy.
    mode : 'trust' | 'paper'
        See the module docstring. 'paper' is the faithful reproduction of dnn-locate.
    objective : 'auto' | 'remove' | 'prior' | 'paper'
        What training minimizes on the masked input. 'remove' (default): the true class's log-odds
        down to what the classifier gives the baseline itself (the input with every feature
        removed) and no further — information is removed, predictions are not pushed to flip;
        log-odds rather than log-probabilities keep the gradient alive for a confident classifier.
        'prior': cross-entropy to the class prior. 'paper': minus the cross-entropy (dnn-locate).
        Default chosen on the known-region tasks (benchmarks/bench_localizer.py).
    baseline : 'auto' | 'zero' | 'mean' | 'blur' | 'noise'
        What a masked entry is replaced by: 0 (paper), the training data's per-channel mean
        (default), a Gaussian blur of the input (``blur_sigma``), or per-channel Gaussian noise.
    per_channel : bool
        One mask per input channel (default) or one mask shared by all channels.
    budget : 'auto' | 'total' | 'per_channel'
        The softmax (and τ) runs over all mask entries, or over space for each mask channel
        separately. 'auto': 'total' (paper mode: 'total' for 1D, 'per_channel' for images).
    sink : 'auto' | bool
        Let the mask spend less than τ (one learned softmax entry whose share is discarded).
        'auto': True (paper mode: False).
    sparsity : 'auto' | float >= 0
        Penalty on the fraction of τ the mask spends (ramped up over the first quarter of
        training). 'auto': 0.5 (paper mode: 0).
    backbone : None | nn.Module | 'unet' | 'paper'
        ``g``: a module ``(N, C, *spatial) -> (N, M, *spatial)`` (M = C, or 1 with
        ``per_channel=False``). None: a small conv encoder–decoder with coordinate channels
        ('unet'; paper mode: the dnn-locate ECG example's network, 'paper').
    epochs, batch_size, lr, weight_decay : training (Adam, cosine-decayed learning rate).
    calibration, holdout : fractions of ``X`` for the calibration and held-out splits when no
        ``X_val`` is given (with ``X_val``, it is split in two halves for them).
    confidence : float in (0, 1)
        Level of the two-sided intervals (the selection uses their lower / upper bound).
    ci : 'bootstrap' | 'delta'
    n_boot : int
        Bootstrap resamples.
    seed : int
    progress : bool
        Show a progress bar.
    checkpoint : None | path
        Save the training state after every epoch; a later ``fit`` with the same settings and
        data resumes from it (and ends with the same result as an uninterrupted fit).
    layout : None | str
        Layout of ``X`` when ambiguous ('NLC', 'NCL', ...).
    distributed : 'auto' | bool
        Data-parallel training with ``torch.distributed``. 'auto' (default): when a process group of
        more than one process is initialized (e.g. a script started with ``torchrun``), ``fit``
        trains the mask network with ``DistributedDataParallel``; True: require such a group;
        False: every process fits alone. Every rank must call ``fit`` with the same model, data
        and settings (checked: a typed error otherwise). Each global batch of ``batch_size``
        samples is split among the ranks, the gradient is the single process's gradient of the
        whole batch (BatchNorm uses the global batch's statistics; τ draws, 'noise' baselines and
        dropout masks are drawn for the global batch and sliced), the masked risks of the
        evaluation are computed a share per rank. Every rank ends with the same fitted localizer;
        only rank 0 writes checkpoints (and shows progress). The result is the single-process
        fit with the same ``batch_size`` up to summation order. In float64 the masks agree
        within 1e-6 (measured 6e-8, with the same ``tau_``, R² path and losses). In float32 the
        rounding differences grow with training (as between any two float32 runs that sum in
        another order): masks within 5e-3 after up to 60 steps (measured 1e-5 after 15, 8e-4
        after 45, 1.4e-3 after 60; 7e-3 and 97 % same argmax after 90 steps in
        benchmarks/bench_ddp.py, where float32 itself is 8e-2 from float64), the same ``tau_``,
        R² paths within one calibration sample's 0/1 flip (``tests/test_localizer_ddp.py``).
        Backends: gloo for a CPU model, nccl for a model on ``cuda:LOCAL_RANK``. Run it with::

            torchrun --nproc-per-node 4 my_fit.py     # my_fit.py: init_process_group(), then fit
            trustmap locate --nproc 4 --model m.safetensors --data d.npz   # the CLI starts torchrun
            torchrun --nproc-per-node 4 -m trustmap.cli locate --model ... --data ...

        With a world size W the per-rank batch is ``batch_size / W``; keep ``batch_size`` to get
        the single-process result, not ``batch_size * W``.

    Attributes (after ``fit``)
    --------------------------
    tau_ : float — the chosen τ.  tau_grid_ : ndarray — the path.
    target_r2_ : float — the resolved target.
    r2_ : R2Estimate — R² at ``tau_`` on the held-out split, with its interval.
    r2_ci_ : (low, high).  r2_path_ : R2Path — the held-out path (monotone).
    calibration_path_ : R2Path — the path τ was chosen on.  history_ : list of dicts per epoch.
    world_size_ : int — the number of processes that trained it (1 without ``torch.distributed``).
    """

    def __init__(self, tau: Any = "auto", target_r2: Any = "auto", r_metric: str = "acc", *,
                 mode: str = "trust", objective: str = "auto", baseline: str = "auto", per_channel: bool = True,
                 budget: str = "auto", sink: Any = "auto", sparsity: Any = "auto", backbone: Any = None,
                 width: int = 16, epochs: int = 20, batch_size: int = 128, lr: float = 3e-3,
                 weight_decay: float = 0.0, calibration: float = 0.2, holdout: float = 0.2,
                 confidence: float = 0.95, ci: str = "bootstrap", n_boot: int = 2000, blur_sigma: Any = "auto",
                 seed: int = 0, progress: bool = False, checkpoint: Any = None, layout: str | None = None,
                 distributed: Any = "auto") -> None:
        self.tau = tau
        self.target_r2 = target_r2
        self.r_metric = r_metric
        self.mode = mode
        self.objective = objective
        self.baseline = baseline
        self.per_channel = per_channel
        self.budget = budget
        self.sink = sink
        self.sparsity = sparsity
        self.backbone = backbone
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.calibration = calibration
        self.holdout = holdout
        self.confidence = confidence
        self.ci = ci
        self.n_boot = n_boot
        self.blur_sigma = blur_sigma
        self.seed = seed
        self.progress = progress
        self.checkpoint = checkpoint
        self.layout = layout
        self.distributed = distributed
        self._validate()

    # ---- scikit-learn style parameters -----------------------------------------------------
    _PARAMS = ("tau", "target_r2", "r_metric", "mode", "objective", "baseline", "per_channel", "budget", "sink",
               "sparsity", "backbone", "width", "epochs", "batch_size", "lr", "weight_decay", "calibration",
               "holdout", "confidence", "ci", "n_boot", "blur_sigma", "seed", "progress", "checkpoint", "layout",
               "distributed")

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params) -> "Localizer":
        for k, v in params.items():
            if k not in self._PARAMS:
                raise InputError("unknown parameter", parameter=k, expected="one of " + ", ".join(self._PARAMS),
                                 got=k, fix="check the spelling")
            setattr(self, k, v)
        self._validate()
        return self

    def __repr__(self) -> str:
        import inspect

        defaults = {k: p.default for k, p in inspect.signature(Localizer.__init__).parameters.items()}
        changed = []
        for k in self._PARAMS:
            v, d = getattr(self, k), defaults.get(k)
            if isinstance(v, nn.Module):
                changed.append(f"{k}={type(v).__name__}(...)")
            elif not (isinstance(v, type(d)) and v == d):
                changed.append(f"{k}={v!r}")
        return f"Localizer({', '.join(changed)})"

    @classmethod
    def paper(cls, tau: Any = "auto", target_r2: Any = "auto", r_metric: str = "acc", **kwargs) -> "Localizer":
        """The faithful dnn-locate configuration (``mode='paper'``)."""
        return cls(tau, target_r2, r_metric, mode="paper", **kwargs)

    # ---- validation -------------------------------------------------------------------
    def _validate(self) -> None:
        def choice(name, allowed, auto=True):
            v = getattr(self, name)
            ok = (auto and v == "auto") or v in allowed
            if not isinstance(v, str) or not ok:
                raise InputError(f"unknown {name}", parameter=name,
                                 expected=" or ".join(repr(a) for a in ((("auto",) if auto else ()) + tuple(allowed))),
                                 got=v, fix=f"pass one of those as {name}=")

        choice("mode", MODES, auto=False)
        choice("objective", OBJECTIVES)
        choice("baseline", BASELINES)
        choice("budget", BUDGETS)
        choice("ci", CI_METHODS, auto=False)
        _distributed._check_distributed(self.distributed)
        if self.r_metric not in _r2.METRICS:
            raise InputError("unknown r_metric", parameter="r_metric", expected="'acc' or 'loss'", got=self.r_metric,
                             fix="use r_metric='acc' (error rate) or 'loss' (cross-entropy)")
        self._tau_grid_param()  # validates tau
        t = self.target_r2
        if not (isinstance(t, str) and t == "auto"):
            if not _is_number(t) or not (0.0 < float(t) <= 1.0) or not math.isfinite(float(t)):
                raise InputError("target_r2 must be 'auto' or a number in (0, 1]", parameter="target_r2",
                                 expected="'auto' or 0 < target_r2 <= 1", got=t,
                                 fix="pass target_r2='auto' (chance level) or e.g. target_r2=0.8")
        for name, lo, hi, lo_open in (("confidence", 0.0, 1.0, True), ("calibration", 0.0, 1.0, True),
                                      ("holdout", 0.0, 1.0, True)):
            v = getattr(self, name)
            if not _is_number(v) or not (lo < float(v) < hi):
                raise InputError(f"{name} must be in ({lo:g}, {hi:g})", parameter=name,
                                 expected=f"a number strictly between {lo:g} and {hi:g}", got=v,
                                 fix=f"e.g. {name}=0.2" if name != "confidence" else "e.g. confidence=0.95")
        if float(self.calibration) + float(self.holdout) >= 0.9:
            raise InputError("calibration + holdout leave too little data to train on", parameter="holdout",
                             expected="calibration + holdout < 0.9", got=float(self.calibration) + float(self.holdout),
                             fix="e.g. calibration=0.2, holdout=0.2")
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("n_boot", 100), ("width", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < minimum:
                raise InputError(f"{name} must be an int >= {minimum}", parameter=name, expected=f"an int >= {minimum}",
                                 got=v, fix=f"e.g. {name}={max(minimum, 20)}")
        for name in ("lr",):
            v = getattr(self, name)
            if not _is_number(v) or not float(v) > 0 or not math.isfinite(float(v)):
                raise InputError(f"{name} must be > 0", parameter=name, expected="a positive number", got=v,
                                 fix="e.g. lr=3e-3")
        if not _is_number(self.weight_decay) or float(self.weight_decay) < 0:
            raise InputError("weight_decay must be >= 0", parameter="weight_decay", expected="a number >= 0",
                             got=self.weight_decay, fix="e.g. weight_decay=0")
        if not (self.sparsity == "auto" or (_is_number(self.sparsity) and float(self.sparsity) >= 0)):
            raise InputError("sparsity must be 'auto' or a number >= 0", parameter="sparsity",
                             expected="'auto' or >= 0", got=self.sparsity, fix="e.g. sparsity=0.05")
        if not (self.sink == "auto" or isinstance(self.sink, bool)):
            raise InputError("sink must be 'auto', True or False", parameter="sink", expected="'auto' or a bool",
                             got=self.sink, fix="sink=True lets the mask spend less than tau")
        if not isinstance(self.per_channel, bool):
            raise InputError("per_channel must be True or False", parameter="per_channel", expected="a bool",
                             got=self.per_channel, fix="per_channel=True gives one mask per input channel")
        if not (self.blur_sigma == "auto" or (_is_number(self.blur_sigma) and float(self.blur_sigma) > 0)):
            raise InputError("blur_sigma must be 'auto' or > 0", parameter="blur_sigma", expected="'auto' or > 0",
                             got=self.blur_sigma, fix="e.g. blur_sigma=5 (samples)")
        b = self.backbone
        if not (b is None or isinstance(b, nn.Module) or b in ("unet", "paper")):
            raise InputError("backbone must be None, 'unet', 'paper' or a torch module", parameter="backbone",
                             expected="None, 'unet', 'paper' or an nn.Module", got=type(b).__name__,
                             fix="pass a module mapping (N, C, *spatial) to (N, M, *spatial) mask logits")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise InputError("seed must be an int", parameter="seed", expected="an int", got=self.seed, fix="seed=0")

    def _tau_grid_param(self) -> np.ndarray | None:
        """The user's τ values (validated), or None for 'auto'."""
        t = self.tau
        if isinstance(t, str):
            if t != "auto":
                raise InputError("tau must be 'auto', a positive number or a sequence of them", parameter="tau",
                                 expected="'auto', tau > 0 or [tau1, tau2, ...]", got=t, fix="e.g. tau='auto' or tau=10")
            return None
        vals = np.atleast_1d(np.asarray(t, dtype=object))
        if vals.size == 0 or vals.ndim != 1 or not all(_is_number(v) for v in vals):
            raise InputError("tau must be 'auto', a positive number or a sequence of them", parameter="tau",
                             expected="'auto', tau > 0 or [tau1, tau2, ...]", got=t, fix="e.g. tau=[2, 5, 10, 20]")
        vals = vals.astype(np.float64)
        if not np.all(np.isfinite(vals)) or np.any(vals <= 0):
            raise InputError("tau must be positive", parameter="tau", expected="every tau > 0", got=t,
                             fix="the mask's budget tau is the most it may remove; pass positive values, e.g. tau=10")
        return np.unique(vals)

    # ---- resolved settings --------------------------------------------------------------
    def _resolved(self, rank: int) -> dict[str, Any]:
        d = PAPER_DEFAULTS if self.mode == "paper" else TRUST_DEFAULTS
        out = {k: (d[k] if getattr(self, k) == "auto" else getattr(self, k))
               for k in ("objective", "baseline", "sink", "sparsity")}
        if self.budget == "auto":
            out["budget"] = "per_channel" if (self.mode == "paper" and rank >= 2) else "total"
        else:
            out["budget"] = self.budget
        out["sparsity"] = float(out["sparsity"])
        return out

    def _make_backbone(self, rank: int, channels: int, mask_channels: int) -> tuple[nn.Module, str]:
        b = self.backbone
        if isinstance(b, nn.Module):
            import copy

            return copy.deepcopy(b), "custom"
        kind = b or ("paper" if self.mode == "paper" else "unet")
        if kind == "paper":
            return paper_backbone(rank, channels, mask_channels), "paper"
        return default_backbone(rank, channels, mask_channels, width=int(self.width)), "unet"

    # ---- fit ----------------------------------------------------------------------------
    def fit(self, model, X, y, X_val=None, y_val=None, *, callback: Callable[[int, dict], Any] | None = None
            ) -> "Localizer":
        """Train the localizer for the frozen classifier ``model`` on ``(X, y)``.

        ``y`` holds class indices ``(N,)`` or one-hot rows ``(N, K)``. Without ``X_val``, ``X`` is
        split into training / calibration / held-out parts (``calibration``, ``holdout``); with
        it, ``X`` trains and ``X_val`` is halved into calibration and held-out parts. (Paper mode:
        R² on ``X_val``, or on the training data when none is given, as dnn-locate does.)
        ``callback(epoch, logs)`` is called after every epoch.
        """
        self._validate()
        model = load_model(model)
        if not model.differentiable:
            raise UnsupportedError("the localizer trains through the classifier and needs its gradients",
                                   parameter="model", expected="a torch or Keras model",
                                   got=getattr(model, "framework", type(model).__name__),
                                   fix="load the model from its torch or Keras form, not ONNX")
        t, lay = model.to_internal(X, self.layout, "X")
        check_sizes(t.shape[2:])
        k = model.n_classes
        yt = _labels(y, len(t), k, "y")
        if X_val is not None:
            if y_val is None:
                raise InputError("X_val was given without y_val", parameter="y_val", expected="labels for X_val",
                                 got=None, fix="pass y_val, or leave X_val=None to split X")
            tv, _ = model.to_internal(X_val, lay.name, "X_val")
            yv = _labels(y_val, len(tv), k, "y_val")
        elif y_val is not None:
            raise InputError("y_val was given without X_val", parameter="X_val", expected="inputs for y_val",
                             got=None, fix="pass X_val too")
        else:
            tv = yv = None
        self.layout_ = lay.name
        self.rank_ = int(model.rank)
        self.channels_ = int(model.channels)
        self.spatial_ = tuple(int(s) for s in t.shape[2:])
        self.n_classes_ = int(k)
        self.model_ = model
        self.model_fingerprint_ = _safe_fingerprint(model)
        settings = self._resolved(self.rank_)
        self.settings_ = settings
        ctx = _distributed.context(self.distributed, model.device)
        self._ddp = ctx
        self.world_size_ = 1 if ctx is None else ctx.world
        try:
            with model.frozen(), (contextlib.nullcontext() if ctx is None or ctx.is_main else _no_warnings()):
                self._fit(model, t, yt, tv, yv, settings, callback)
        finally:
            self.__dict__.pop("_ddp", None)
        return self

    def _fit(self, model: Model, t, yt, tv, yv, settings, callback) -> None:
        ctx = self._ctx()
        fp = self._fingerprint(t, yt, tv, yv)
        if ctx is not None and not ctx.all_same(fp):
            raise InputError("the processes of the data-parallel fit were given different inputs",
                             parameter="distributed", expected="the same model, data (X, y, X_val, y_val), "
                             "settings and seed on every rank", got=f"{ctx.world} ranks that disagree",
                             fix="give every rank the full data set (the batches are split among them), or pass "
                                 "distributed=False to fit independently in each process")
        rng = np.random.default_rng(self.seed)
        paper = self.mode == "paper"
        # splits -----------------------------------------------------------------------------
        if paper:
            train_idx = np.arange(len(t))
            x_tr, y_tr = t, yt
            x_ev, y_ev = (t, yt) if tv is None else (tv, yv)
            x_cal = y_cal = x_ho = y_ho = None
            self.split_ = {"train": int(len(t)), "evaluation": "train" if tv is None else "X_val",
                           "n_evaluation": int(len(x_ev))}
        else:
            if tv is None:
                parts = _stratified_split(yt.cpu().numpy(), [1 - self.calibration - self.holdout, self.calibration,
                                                             self.holdout], rng)
                train_idx, cal_idx, ho_idx = parts
                x_tr, y_tr = t[train_idx], yt[train_idx]
                x_cal, y_cal, x_ho, y_ho = t[cal_idx], yt[cal_idx], t[ho_idx], yt[ho_idx]
            else:
                train_idx = np.arange(len(t))
                x_tr, y_tr = t, yt
                cal_idx, ho_idx = _stratified_split(yv.cpu().numpy(), [0.5, 0.5], rng)
                x_cal, y_cal, x_ho, y_ho = tv[cal_idx], yv[cal_idx], tv[ho_idx], yv[ho_idx]
            if len(x_cal) < 2 or len(x_ho) < 2 or len(x_tr) < 2:
                raise DataError("too few samples to split into training, calibration and held-out parts",
                                parameter="X", expected="at least a few dozen samples", got=f"{len(t)} samples",
                                fix="pass more data, or X_val/y_val for calibration and held-out")
            if min(len(x_cal), len(x_ho)) < 100:
                warnings.warn(f"the calibration / held-out splits hold {len(x_cal)} / {len(x_ho)} samples; the R² "
                              "intervals will be wide and the 'auto' target easy to pass. Use a few hundred or more.",
                              stacklevel=3)
            self.split_ = {"train": int(len(x_tr)), "calibration": int(len(x_cal)), "holdout": int(len(x_ho)),
                           "source": "X" if tv is None else "X_val"}
            x_ev, y_ev = x_cal, y_cal

        # baseline statistics (training inputs only) --------------------------------------
        dims = (0,) + tuple(range(2, t.ndim))
        self._base_mean = x_tr.mean(dim=dims, keepdim=True)[0:1].detach().clone()
        self._base_std = x_tr.std(dim=dims, keepdim=True)[0:1].detach().clone()
        self._blur_sigma = (float(self.blur_sigma) if self.blur_sigma != "auto"
                            else max(2.0, 0.04 * min(self.spatial_)))
        # clean predictions, the classifier's chance check, the target ---------------------------
        clean_ev = _logits(model, x_ev)
        self._check_not_chance(clean_ev, y_ev)
        if paper:
            risk_c = _r2.per_sample_risk(torch.from_numpy(clean_ev), y_ev.cpu(), self.r_metric).numpy()
            if self.target_r2 == "auto":
                perm = _r2.permutation_risk(y_ev.cpu().numpy(), clean_ev, self.r_metric, rng)
                self.target_r2_ = float(_r2.r2_value(risk_c.mean(), perm))
            else:
                self.target_r2_ = float(self.target_r2)
        else:
            risk_c = _r2.per_sample_risk(torch.from_numpy(clean_ev), y_cal.cpu(), self.r_metric).numpy()
            if self.target_r2 == "auto":
                chance = _r2.chance_risk(y_cal.cpu().numpy(), clean_ev, self.r_metric, self.n_classes_)
                self.target_r2_ = float(_r2.r2_value(risk_c.mean(), chance))
            else:
                self.target_r2_ = float(self.target_r2)
            if risk_c.mean() == 0 and self.r_metric == "acc":
                warnings.warn("the classifier makes no error on the calibration split, so R² (acc) is 1 for every "
                              "tau whose masks cause any error; r_metric='loss' grades the removal more finely",
                              stacklevel=3)
        # τ grid -----------------------------------------------------------------------------
        mask_channels = self.channels_ if self.per_channel else 1
        grid = self._tau_grid_param()
        if grid is None:
            entries = mask_channels * int(np.prod(self.spatial_))
            if settings["budget"] == "per_channel":
                entries = int(np.prod(self.spatial_))
            grid = np.unique(np.maximum(0.5, np.geomspace(0.002, 0.1, 12) * entries))
        self.tau_grid_ = grid
        self.mask_channels_ = mask_channels
        log_prior = torch.log(torch.bincount(y_tr.cpu(), minlength=self.n_classes_).to(torch.float64)
                              .clamp_min(1) / len(y_tr)).to(t.dtype).to(t.device)
        self._log_prior = log_prior
        state = self._load_checkpoint(fp) if ctx is None else ctx.from_main(lambda: self._load_checkpoint(fp))
        if paper:
            self._fit_sweep(model, x_tr, y_tr, x_ev, y_ev, risk_c, grid, settings, state, fp, callback)
        else:
            self._fit_joint(model, x_tr, y_tr, x_cal, y_cal, x_ho, y_ho, risk_c, clean_ev, grid, settings, state, fp,
                            callback)
        self.train_size_ = int(len(x_tr))

    def _check_not_chance(self, clean_logits: np.ndarray, y: torch.Tensor) -> None:
        yn = y.cpu().numpy()
        c = _r2.per_sample_risk(torch.from_numpy(clean_logits), y.cpu(), "acc").numpy()
        err, chance, low = _r2.above_chance(c, yn, clean_logits, self.n_classes_, float(self.confidence),
                                            seed=_mix(self.seed, 4))
        if err >= chance - 1e-12:
            raise InputError("the classifier is no better than chance on these data, so R² is undefined",
                             parameter="model", expected=f"accuracy above chance ({1 - chance:.3f})",
                             got=f"accuracy {1 - err:.3f}",
                             fix="check that the labels and the model's classes correspond, or train the model")
        if low <= 0:
            warnings.warn(f"the classifier's accuracy ({1 - err:.3f}) is not clearly above chance ({1 - chance:.3f}); "
                          "R² will be unreliable", stacklevel=4)

    # ---- masks -----------------------------------------------------------------------------
    def _ctx(self) -> "_distributed.DistContext | None":
        return self.__dict__.get("_ddp")

    def _base(self, x: torch.Tensor, kind: str, gen: torch.Generator | None,
              rows: tuple[int, int, int] | None = None) -> torch.Tensor | None:
        """The baseline for ``x``. ``rows=(n, a, b)``: ``x`` is rows ``a:b`` of a batch of ``n`` (data-parallel
        shard); the noise is drawn for the whole batch and sliced, as one process would draw it."""
        if kind == "zero":
            return None
        if kind == "mean":
            return self._base_mean.to(x.dtype).expand_as(x)
        if kind == "blur":
            return blur(x, self._blur_sigma)
        shape = tuple(x.shape) if rows is None else (rows[0],) + tuple(x.shape[1:])
        noise = torch.randn(shape, generator=gen, dtype=x.dtype, device=gen.device) if gen is not None else \
            torch.randn(shape, dtype=x.dtype, device=x.device)
        if rows is not None:
            noise = noise[rows[1]:rows[2]]
        noise = noise.to(x.device)
        return self._base_mean.to(x.dtype) + self._base_std.to(x.dtype) * noise

    def _masked(self, x: torch.Tensor, z: torch.Tensor, tau, gen=None, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
        delta = self.net_.masks(z, tau)
        return apply_mask(x, delta, self._base(x, self.settings_["baseline"], gen, rows)), delta

    def _reference(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Log-odds of the true class on the fully masked input (the baseline itself), ``(N,)``: what
        the classifier says when every feature is removed. 'remove' pushes the masked input down to it."""
        kind = self.settings_["baseline"]
        out = []
        with model.frozen(), torch.inference_mode():
            for s in self._chunk(len(x), x[0].numel()):
                xb = x[s]
                base = torch.zeros_like(xb) if kind == "zero" else (
                    self._base(xb, "mean" if kind == "noise" else kind, None))
                out.append(_log_odds(model.logits_t(base), y[s]))
        return torch.cat(out).clone()

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, tau: torch.Tensor,
              ref: torch.Tensor | None, progress: float = 1.0, scale: float | None = None) -> torch.Tensor:
        """The training loss: per-sample terms averaged over the batch. ``scale`` (data-parallel): the
        shard's per-sample *sum* times ``scale`` (= world size / global batch size), so the gradients
        DDP averages over the ranks are those of the global batch's mean."""
        kind = self.settings_["objective"]
        logp = torch.log_softmax(logits, dim=1)
        lp_y = logp.gather(1, y[:, None])[:, 0]
        if kind == "paper":
            obj = lp_y  # minimize log p_y  <=> maximize the cross-entropy
        elif kind == "prior":
            obj = -(self._log_prior.exp()[None, :] * logp).sum(1)
        else:  # log-odds rather than log p_y: the gradient does not vanish when the classifier is sure
            obj = torch.relu(_log_odds(logits, y) - ref)
        loss = obj.mean() if scale is None else obj.sum() * scale
        # the sparsity penalty ramps up over the first quarter of training: the mask first learns to
        # remove, then to spend no more than it needs (at full strength from the start it can stall at
        # spending nothing, e.g. with a backbone that cannot tell the class bump from the distractor)
        lam = self.settings_["sparsity"] * min(1.0, 4.0 * progress)
        if lam > 0:
            spent = delta.reshape(len(delta), -1).sum(1) / tau.reshape(-1)
            loss = loss + lam * (spent.mean() if scale is None else spent.sum() * scale)
        return loss

    # ---- training ------------------------------------------------------------------------
    def _new_net(self, stage: int) -> MaskNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, stage, 10_007))
            backbone, kind = self._make_backbone(self.rank_, self.channels_, self.mask_channels_)
            net = MaskNet(backbone, self.rank_, self.mask_channels_, self.settings_["budget"], self.settings_["sink"],
                          self._entries_per_group())
        self.backbone_kind_ = kind
        return net.to(device=self.model_.device, dtype=self.model_.dtype)

    def _entries_per_group(self) -> int:
        n = int(np.prod(self.spatial_))
        return n * self.mask_channels_ if self.settings_["budget"] == "total" else n

    def _train(self, model: Model, net: MaskNet, x: torch.Tensor, y: torch.Tensor, tau_lo: float, tau_hi: float,
               stage: int, state: dict | None, fp: str, extra: dict, callback, bar) -> None:
        # the few head parameters (BatchNorm scale/shift = the softmax's temperature, the sink) learn faster
        head = [p for n, p in net.named_parameters() if n.startswith(("bn.", "sink"))]
        body = [p for n, p in net.named_parameters() if not n.startswith(("bn.", "sink"))]
        head_mult = HEAD_LR_MULT if self.mode == "trust" else 1.0  # the paper trains every weight alike
        opt = torch.optim.Adam([{"params": body, "lr_mult": 1.0}, {"params": head, "lr_mult": head_mult}],
                               lr=float(self.lr), weight_decay=float(self.weight_decay))
        start = 0
        if state is not None and state.get("stage") == stage:
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            start = int(state["epoch"]) + 1
            self.history_ = list(state.get("history", []))
        n, bs = len(x), int(self.batch_size)
        steps_per_epoch = max(1, math.ceil(n / bs))
        total = steps_per_epoch * int(self.epochs)
        ref = self._reference(model, x, y) if self.settings_["objective"] == "remove" else None
        ctx = self._ctx()
        with contextlib.ExitStack() as stack:
            if ctx is not None:  # data-parallel: DDP over this rank's shard of every global batch
                stack.enter_context(ctx.patched(net))
                fwd = ctx.wrap(net)
            else:
                fwd = net
            self._epochs(model, net, fwd, opt, x, y, ref, start, steps_per_epoch, total, tau_lo, tau_hi, stage, fp,
                         extra, callback, bar)
            if ctx is not None:
                ctx.broadcast_module(net)  # the ranks agree already; this makes sure of it
        net.eval()

    def _epochs(self, model: Model, net: MaskNet, fwd: nn.Module, opt, x, y, ref, start: int, steps_per_epoch: int,
                total: int, tau_lo: float, tau_hi: float, stage: int, fp: str, extra: dict, callback, bar) -> None:
        ctx = self._ctx()
        n, bs = len(x), int(self.batch_size)
        lr0 = float(self.lr)
        log_lo, log_hi = math.log(tau_lo), math.log(tau_hi)
        noisy = self.settings_["baseline"] == "noise"
        for epoch in range(start, int(self.epochs)):
            net.train()
            gen = torch.Generator(device="cpu").manual_seed(_mix(self.seed, stage, epoch))
            order = torch.randperm(n, generator=gen)
            taus = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, generator=gen, dtype=torch.float64))
            noise_gen = torch.Generator(device="cpu").manual_seed(_mix(self.seed, stage, epoch, 77))
            total_loss = 0.0
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_mix(self.seed, stage, epoch, 3))
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    for g in opt.param_groups:
                        g["lr"] = g["lr_mult"] * lr0 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total)))
                    idx = order[i * bs:(i + 1) * bs]
                    if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples
                        continue
                    m, rows, scale = len(idx), None, None
                    if ctx is not None:  # this rank's share of the global batch (the same order on every rank)
                        a, b = ctx.set_step(m)
                        idx, rows, scale = idx[a:b], (m, a, b), ctx.world / m
                    dev_idx = idx.to(x.device)
                    xb, yb = x[dev_idx], y[dev_idx]
                    tb = taus[idx].to(dtype=x.dtype, device=x.device)
                    delta = fwd(xb, tb)
                    base = self._base(xb, self.settings_["baseline"], noise_gen if noisy else None, rows)
                    xm = apply_mask(xb, delta, base)
                    loss = self._loss(model.logits_t(xm), yb, delta, tb, None if ref is None else ref[dev_idx],
                                      step / total, scale)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total_loss += float(loss.detach()) * (m if scale is None else m / ctx.world)
            seconds = time.perf_counter() - t0
            if ctx is not None:  # the global batch's loss; the slowest rank's time
                total_loss = float(ctx.sum_np(np.array([total_loss]))[0])
                seconds = ctx.max_float(seconds)
            logs = {"stage": stage, "epoch": epoch, "loss": total_loss / n, "seconds": seconds,
                    **{k: v for k, v in extra.items() if k != "sweep"}}
            self.history_.append(logs)
            if self.checkpoint is not None and (ctx is None or ctx.is_main):
                self._save_checkpoint(fp, stage, epoch, net, opt, extra)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", **({"tau": f"{extra['tau']:.3g}"} if "tau" in extra else {}))
            if callback is not None:
                callback(epoch, dict(logs))

    def _progress(self, total: int):
        ctx = self._ctx()
        if not self.progress or (ctx is not None and not ctx.is_main):
            return contextlib.nullcontext(None)
        from tqdm.auto import tqdm

        return tqdm(total=total, desc="localizer", unit="epoch", leave=False)

    def _fit_joint(self, model, x_tr, y_tr, x_cal, y_cal, x_ho, y_ho, risk_c, clean_cal, grid, settings, state, fp,
                   callback) -> None:
        self.history_ = []
        net = self._new_net(0)
        with self._progress(int(self.epochs)) as bar:
            if bar is not None and state is not None:
                bar.update(int(state["epoch"]) + 1)
            self._train(model, net, x_tr, y_tr, float(grid.min()), float(grid.max()), 0, state, fp, {}, callback, bar)
        self.net_ = net
        level = float(self.confidence)
        # calibration path: choose τ ------------------------------------------------------
        z_cal = self._logits_z(x_cal) if self._ctx() is None else None  # data-parallel: per rank, below
        masked_cal = self._masked_risks(model, x_cal, y_cal, z_cal, grid)
        cal = self._path(risk_c, masked_cal, level, _mix(self.seed, 1), "calibration")
        self.calibration_path_ = cal
        if self.target_r2 == "auto":
            gap = _r2.target_gap(masked_cal, y_cal.cpu().numpy(), clean_cal, self.r_metric, self.n_classes_,
                                 level, int(self.n_boot), _mix(self.seed, 1))
            reach = _r2.isotonic(gap["high"]) >= 0
            self.target_gap_ = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in gap.items()}
        else:
            reach = cal.low >= self.target_r2_ - 1e-12
        hit = np.flatnonzero(reach)
        if len(hit):
            i = int(hit[0])
            self.target_reached_ = True
        else:
            # the target is out of reach: the smallest tau whose masked risk cannot be told apart from
            # the largest the path reaches (no later tau removes significantly more)
            top = _r2.isotonic(masked_cal.mean(1))[-1]
            hi = _r2.boot_quantiles(masked_cal, level, int(self.n_boot), _mix(self.seed, 5))[1]
            i = int(np.flatnonzero(_r2.isotonic(hi) >= top)[0])
            self.target_reached_ = False
            warnings.warn(f"no tau on the path reached the target R² {self.target_r2_:.3f} (calibration R² at the "
                          f"largest tau {grid[-1]:.3g}: {cal.estimate[-1]:.3f}); tau_ = {grid[i]:.3g} is the smallest "
                          "tau whose masked risk is as high as the path's (within its interval). Pass larger tau "
                          "values or a lower target_r2.", stacklevel=4)
        self.tau_ = float(grid[i])
        self.tau_index_ = i
        # held-out: report ----------------------------------------------------------------------
        clean_ho = _logits(model, x_ho)
        risk_ho = _r2.per_sample_risk(torch.from_numpy(clean_ho), y_ho.cpu(), self.r_metric).numpy()
        z_ho = self._logits_z(x_ho) if self._ctx() is None else None
        masked_ho = self._masked_risks(model, x_ho, y_ho, z_ho, grid)
        ho = self._path(risk_ho, masked_ho, level, _mix(self.seed, 2), "holdout")
        self.r2_path_ = ho
        raw = {"estimate": ho.raw_estimate[i:i + 1], "low": ho.raw_low[i:i + 1], "high": ho.raw_high[i:i + 1]}
        self.r2_ = _r2.R2Estimate(float(raw["estimate"][0]), float(raw["low"][0]), float(raw["high"][0]), level,
                                  self.r_metric, self.ci, int(len(x_ho)), float(risk_ho.mean()),
                                  float(masked_ho[i].mean()), self.tau_)
        self.r2_ci_ = (self.r2_.low, self.r2_.high)

    def _fit_sweep(self, model, x_tr, y_tr, x_ev, y_ev, risk_c, grid, settings, state, fp, callback) -> None:
        self.history_ = []
        level = float(self.confidence)
        done: list[dict] = list(state.get("sweep", [])) if state is not None else []
        net = None
        last_masked = None
        reached = False
        with self._progress(int(self.epochs) * len(grid)) as bar:
            for stage, tau in enumerate(grid):
                if stage < len(done):  # finished before an interruption (its result is in the checkpoint)
                    if bar is not None:
                        bar.update(int(self.epochs))
                    continue
                net = self._new_net(stage)
                st = state if (state is not None and state.get("stage") == stage) else None
                if bar is not None and st is not None:
                    bar.update(int(st["epoch"]) + 1)
                self._train(model, net, x_tr, y_tr, float(tau), float(tau), stage, st, fp,
                            {"tau": float(tau), "sweep": done}, callback, bar)
                self.net_ = net
                z = self._logits_z(x_ev) if self._ctx() is None else None
                last_masked = self._masked_risks(model, x_ev, y_ev, z, np.array([tau]))[0]
                s = _r2.r2_summary(risk_c, last_masked, level=level, method=self.ci, n_boot=int(self.n_boot),
                                   seed=_mix(self.seed, 1))
                done.append({"tau": float(tau), "estimate": float(s["estimate"][0]), "low": float(s["low"][0]),
                             "high": float(s["high"][0]), "masked_risk": float(last_masked.mean())})
                if done[-1]["estimate"] >= self.target_r2_:
                    reached = True
                    break
        n_done = len(done)
        taus = grid[:n_done]
        e = np.asarray([d["estimate"] for d in done])
        lo = np.asarray([d["low"] for d in done])
        hi = np.asarray([d["high"] for d in done])
        path = _r2.R2Path(taus, e, lo, hi, e.copy(), lo.copy(), hi.copy(), self.split_["evaluation"], int(len(x_ev)),
                          level, self.r_metric, self.target_r2_)
        self.calibration_path_ = path
        self.r2_path_ = path
        self.target_reached_ = reached
        if not reached:
            warnings.warn(f"the localizer can not reach the target R² {self.target_r2_:.3f}; increase tau",
                          stacklevel=4)
        self.tau_ = float(taus[-1])
        self.tau_index_ = n_done - 1
        self.net_ = net
        self.sweep_ = done
        self.r2_ = _r2.R2Estimate(float(e[-1]), float(lo[-1]), float(hi[-1]), level, self.r_metric, self.ci,
                                  int(len(x_ev)), float(risk_c.mean()), float(done[-1]["masked_risk"]), self.tau_)
        self.r2_ci_ = (self.r2_.low, self.r2_.high)

    def _path(self, clean, masked, level, seed, split) -> _r2.R2Path:
        s = _r2.r2_summary(clean, masked, level=level, method=self.ci, n_boot=int(self.n_boot), seed=seed)
        est = _r2.isotonic(s["estimate"])
        low = np.minimum(_r2.isotonic(s["low"]), est)
        high = np.maximum(_r2.isotonic(s["high"]), est)
        return _r2.R2Path(self.tau_grid_.copy(), est, low, high, s["estimate"], s["low"], s["high"], split,
                          int(len(clean)), level, self.r_metric, self.target_r2_)

    # ---- evaluation helpers --------------------------------------------------------------------
    def _chunk(self, n: int, per_sample: int) -> list[slice]:
        b = max(1, min(4096, int((256 * 2**20) // max(1, per_sample * 4 * 64))))
        return [slice(i, min(n, i + b)) for i in range(0, n, b)]

    def _logits_z(self, x: torch.Tensor) -> torch.Tensor:
        """Mask logits z = BN(g(x)) ``(N, M, *spatial)`` in evaluation mode (no batch dependence)."""
        net = self.net_
        was = net.training
        net.eval()
        try:
            with torch.inference_mode():
                outs = [net.logits(x[s]) for s in self._chunk(len(x), x[0].numel())]
        finally:
            net.train(was)
        return torch.cat(outs)

    def _masked_risks(self, model: Model, x, y, z, taus) -> np.ndarray:
        """Per-sample risks on the masked inputs for every τ: ``(T, N)``; ``z``: the mask logits of ``x``.
        Data-parallel (``z=None``): each rank computes the mask logits and risks of its share of every
        chunk (the noise baseline drawn for the whole chunk, as one process does) and the shares are
        summed, so every rank gets the whole table."""
        ctx = self._ctx()
        if ctx is None:
            out = np.empty((len(taus), len(x)))
            with model.frozen(), torch.inference_mode():
                for j, tau in enumerate(taus):
                    gen = torch.Generator(device="cpu").manual_seed(_mix(self.seed, 99))
                    rows = []
                    for s in self._chunk(len(x), x[0].numel()):
                        xm, _ = self._masked(x[s], z[s], float(tau), gen)
                        rows.append(_r2.per_sample_risk(model.logits_t(xm), y[s], self.r_metric))
                    out[j] = torch.cat(rows).cpu().numpy()
            return out
        out = np.zeros((len(taus), len(x)))
        chunks = self._chunk(len(x), x[0].numel())
        shares = [(s.stop - s.start, *ctx.shard(s.stop - s.start)) for s in chunks]
        subs = [slice(s.start + a, s.start + b) for s, (_, a, b) in zip(chunks, shares)]
        zs = [self._logits_z(x[sub]) if sub.stop > sub.start else None for sub in subs]
        with model.frozen(), torch.inference_mode():
            for j, tau in enumerate(taus):
                gen = torch.Generator(device="cpu").manual_seed(_mix(self.seed, 99))
                for sub, (m, a, b), zz in zip(subs, shares, zs):
                    if a == b:
                        if self.settings_["baseline"] == "noise":  # keep the noise stream in step
                            self._base(x[sub.start:sub.start + 1], "noise", gen, (m, 0, 0))
                        continue
                    xm, _ = self._masked(x[sub], zz, float(tau), gen, (m, a, b))
                    out[j, sub] = _r2.per_sample_risk(model.logits_t(xm), y[sub], self.r_metric).cpu().numpy()
        return ctx.sum_np(out)

    # ---- public after fit ----------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError("this Localizer is not fitted yet", parameter="fit",
                                 expected="a call to fit(model, X, y) (or Localizer.load(path)) first",
                                 fix="call loc.fit(model, X, y) before locate / r2 / save")

    def _internal(self, X, layout=None, parameter: str = "X") -> tuple[torch.Tensor, Layout]:
        if getattr(self, "model_", None) is not None:
            return self.model_.to_internal(X, layout or self.layout, parameter)
        x = check_array(X, parameter)
        lay = resolve_layout(tuple(x.shape), rank=self.rank_, channels=self.channels_, spatial=self.spatial_,
                             layout=layout or self.layout, parameter=parameter)
        t = lay.to_internal(x)
        if not isinstance(t, torch.Tensor):
            t = torch.from_numpy(np.ascontiguousarray(t))
        return t.to(torch.float32).contiguous(), lay

    def _check_tau(self, tau) -> float:
        if tau is None:
            return self.tau_
        if not _is_number(tau) or not math.isfinite(float(tau)) or float(tau) <= 0:
            raise InputError("tau must be positive", parameter="tau", expected="tau > 0", got=tau,
                             fix=f"pass a value on the path, e.g. tau={self.tau_:g}")
        if self.mode == "paper" and not math.isclose(float(tau), self.tau_):
            raise UnsupportedError("a paper-mode localizer is trained for one tau only", parameter="tau",
                                   expected=f"tau={self.tau_:g} (or None)", got=tau,
                                   fix="use mode='trust' to get the whole path from one fit")
        return float(tau)

    def masks(self, X, tau: float | None = None, layout: str | None = None) -> np.ndarray:
        """The masks δ(X) at ``tau`` (default ``tau_``), internal layout ``(N, C, *spatial)`` (numpy)."""
        self._check_fitted()
        t, _ = self._internal(X, layout)
        return self._masks_internal(t, self._check_tau(tau))

    def _masks_internal(self, t: torch.Tensor, tau: float) -> np.ndarray:
        t = t.to(device=self._net_device(), dtype=self._net_dtype())
        z = self._logits_z(t)
        with torch.inference_mode():
            d = self.net_.masks(z, tau)
        if d.shape[1] != t.shape[1]:
            d = d.expand(-1, t.shape[1], *d.shape[2:])
        return d.detach().cpu().numpy().astype(np.float32)

    def _net_device(self):
        return next(self.net_.parameters()).device

    def _net_dtype(self):
        return next(self.net_.parameters()).dtype

    def locate(self, X, y=None, tau: float | None = None, layout: str | None = None) -> Attribution:
        """The masks δ(X) as an :class:`Attribution` in the caller's layout (entries in [0, 1)).

        ``targets`` are ``y`` when given, else the classifier's predictions (-1 when the
        localizer was loaded without its model).
        """
        self._check_fitted()
        t, lay = self._internal(X, layout)
        tau = self._check_tau(tau)
        maps = self._masks_internal(t, tau)
        if y is not None:
            targets = _labels(y, len(t), self.n_classes_, "y").cpu().numpy()
        elif getattr(self, "model_", None) is not None:
            targets = _logits(self.model_, t).argmax(1)
        else:
            targets = np.full(len(t), -1, dtype=np.int64)
        params = self._json_params()
        extras: dict[str, Any] = {"tau": tau, "mask_sum": maps.reshape(len(maps), -1).sum(1)}
        if hasattr(self, "r2_"):
            extras.update({"r2": self.r2_.estimate, "r2_low": self.r2_.low, "r2_high": self.r2_.high,
                           "r2_tau": self.r2_.tau, "target_r2": self.target_r2_})
        prov = {"seed": int(self.seed), "model": getattr(self, "model_fingerprint_", None),
                "data": _io.fingerprint_array(np.ascontiguousarray(t.cpu().numpy()))}
        return Attribution(lay.from_internal(maps), targets, "trust", params, lay.name, extras, prov)

    def r2(self, X, y, tau: float | None = None, model=None, layout: str | None = None) -> _r2.R2Estimate:
        """R² of the masks at ``tau`` (default ``tau_``) on ``(X, y)`` with its confidence interval."""
        self._check_fitted()
        model = load_model(model) if model is not None else getattr(self, "model_", None)
        if model is None:
            raise InputError("a loaded localizer needs its classifier to compute R²", parameter="model",
                             expected="the model the localizer was fitted for", got=None,
                             fix="pass model=... (or Localizer.load(path, model=...))")
        t, _ = model.to_internal(X, layout or self.layout, "X")
        yt = _labels(y, len(t), self.n_classes_, "y")
        tau = self._check_tau(tau)
        with model.frozen():
            clean = _logits(model, t)
            risk_c = _r2.per_sample_risk(torch.from_numpy(clean), yt.cpu(), self.r_metric).numpy()
            z = self._logits_z(t.to(device=self._net_device(), dtype=self._net_dtype()))
            m = self._masked_risks(model, t, yt, z, np.array([tau]))[0]
        s = _r2.r2_summary(risk_c, m, level=float(self.confidence), method=self.ci, n_boot=int(self.n_boot),
                           seed=_mix(self.seed, 3))
        return _r2.R2Estimate(float(s["estimate"][0]), float(s["low"][0]), float(s["high"][0]), float(self.confidence),
                              self.r_metric, self.ci, int(len(t)), float(risk_c.mean()), float(m.mean()), tau)

    # ---- plots ------------------------------------------------------------------------------
    def plot_r2_path(self, **kwargs):
        """The held-out R² path with its confidence band against τ (and the target, the chosen τ)."""
        self._check_fitted()
        from .plots import plot_r2_path

        return plot_r2_path(self.r2_path_, tau=self.tau_, target=self.target_r2_, **kwargs)

    def da_plot(self, X, y, n_per_class: int = 3, **kwargs):
        """Localized regions per class for example instances (DA plot)."""
        self._check_fitted()
        from .plots import da_plot

        return da_plot(self, X, y, n_per_class=n_per_class, **kwargs)

    def path_plot(self, X, taus=None, **kwargs):
        """The masks of a few instances for each τ side by side (path plot)."""
        self._check_fitted()
        from .plots import path_plot

        return path_plot(self, X, taus=taus, **kwargs)

    # ---- persistence ------------------------------------------------------------------------
    def _json_params(self) -> dict[str, Any]:
        out = {}
        for k in self._PARAMS:
            v = getattr(self, k)
            if isinstance(v, nn.Module):
                v = f"custom:{type(v).__name__}"
            elif isinstance(v, (os.PathLike,)):
                v = str(v)
            out[k] = _io.to_jsonable(v)
        return out

    def save(self, path) -> Path:
        """Write the fitted localizer: ``path`` as ``.safetensors`` (+ ``.json`` beside), or a directory
        holding ``localizer.safetensors`` and ``localizer.json``. No pickle."""
        self._check_fitted()
        from safetensors.torch import save_file

        st_path, js_path = _paths(path)
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        tensors["base.mean"] = self._base_mean.detach().cpu().contiguous()
        tensors["base.std"] = self._base_std.detach().cpu().contiguous()
        tensors["log_prior"] = self._log_prior.detach().cpu().contiguous()
        record = {
            "format": _FORMAT,
            "params": self._json_params(),
            "settings": self.settings_,
            "backbone_kind": self.backbone_kind_,
            "rank": self.rank_, "channels": self.channels_, "spatial": list(self.spatial_), "layout": self.layout_,
            "n_classes": self.n_classes_, "mask_channels": self.mask_channels_, "blur_sigma": self._blur_sigma,
            "tau": self.tau_, "tau_index": self.tau_index_, "tau_grid": self.tau_grid_.tolist(),
            "target_r2": self.target_r2_, "target_reached": self.target_reached_,
            "r2": self.r2_.to_dict(), "r2_path": self.r2_path_.to_dict(),
            "calibration_path": self.calibration_path_.to_dict(), "split": self.split_,
            "model_fingerprint": self.model_fingerprint_, "history": self.history_,
            "world_size": int(getattr(self, "world_size_", 1)),
            "weights_sha256": _tensors_sha(tensors), "versions": _io.versions(),
        }
        with _io.atomic_path(st_path, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp))
        _io.write_json(js_path, record)
        return st_path

    @classmethod
    def load(cls, path, model=None, backbone: nn.Module | None = None) -> "Localizer":
        """Read a localizer written by :meth:`save`. ``model`` (optional) enables :meth:`r2` and
        predicted targets; ``backbone`` is needed when it was fitted with a custom module."""
        from safetensors.torch import load_file

        st_path, js_path = _paths(path)
        for p in (st_path, js_path):
            if not p.exists():
                raise RunDirError("localizer file is missing", parameter="path",
                                  expected="a .safetensors file with its .json record beside it", got=str(p),
                                  fix="save the localizer with Localizer.save(path)")
        try:
            record = _io.read_json(js_path)
            tensors = load_file(str(st_path))
        except Exception as exc:
            raise RunDirError(f"localizer file is corrupt ({type(exc).__name__}: {exc})", parameter="path",
                              got=str(st_path), fix="fit and save the localizer again") from exc
        if record.get("format") != _FORMAT:
            raise RunDirError("not a trustmap localizer file", parameter="path", expected=_FORMAT,
                              got=record.get("format"), fix="pass a file written by Localizer.save")
        if _tensors_sha(tensors) != record.get("weights_sha256"):
            raise RunDirError("weights do not match their JSON record (file changed or corrupt)", parameter="path",
                              got=str(st_path), fix="fit and save the localizer again")
        params = dict(record["params"])
        kind = record["backbone_kind"]
        if kind == "custom":
            if backbone is None:
                raise InputError("this localizer was fitted with a custom backbone", parameter="backbone",
                                 expected=f"a module like the one fitted ({params.get('backbone')})", got=None,
                                 fix="pass backbone=<the same architecture> to Localizer.load")
            params["backbone"] = backbone
        else:
            params["backbone"] = kind
        params["checkpoint"] = None
        obj = cls(**{k: (tuple(v) if isinstance(v, list) and k != "tau" else v) for k, v in params.items()
                     if k in cls._PARAMS})
        obj.settings_ = record["settings"]
        obj.rank_, obj.channels_ = int(record["rank"]), int(record["channels"])
        obj.spatial_, obj.layout_ = tuple(record["spatial"]), record["layout"]
        obj.n_classes_, obj.mask_channels_ = int(record["n_classes"]), int(record["mask_channels"])
        obj._blur_sigma = float(record["blur_sigma"])
        obj.model_ = None
        obj.backbone_kind_ = kind
        bb, _ = obj._make_backbone(obj.rank_, obj.channels_, obj.mask_channels_)
        obj.tau_grid_ = np.asarray(record["tau_grid"], dtype=np.float64)
        net = MaskNet(bb, obj.rank_, obj.mask_channels_, obj.settings_["budget"], obj.settings_["sink"],
                      obj._entries_per_group())
        state = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError("the backbone does not match the saved weights", parameter="backbone",
                             got=str(exc)[:200], fix="pass the same architecture the localizer was fitted with") from exc
        net.eval()
        obj.net_ = net
        obj._base_mean, obj._base_std = tensors["base.mean"], tensors["base.std"]
        obj._log_prior = tensors["log_prior"]
        obj.tau_, obj.tau_index_ = float(record["tau"]), int(record["tau_index"])
        obj.tau_grid_ = np.asarray(record["tau_grid"], dtype=np.float64)
        obj.target_r2_, obj.target_reached_ = float(record["target_r2"]), bool(record["target_reached"])
        obj.r2_ = _r2.R2Estimate(**record["r2"])
        obj.r2_ci_ = (obj.r2_.low, obj.r2_.high)
        obj.r2_path_ = _r2.R2Path.from_dict(record["r2_path"])
        obj.calibration_path_ = _r2.R2Path.from_dict(record["calibration_path"])
        obj.split_ = record["split"]
        obj.model_fingerprint_ = record.get("model_fingerprint")
        obj.history_ = record.get("history", [])
        obj.world_size_ = int(record.get("world_size", 1))
        if model is not None:
            m = load_model(model)
            fp = _safe_fingerprint(m)
            if fp is not None and obj.model_fingerprint_ is not None and fp != obj.model_fingerprint_:
                warnings.warn("the model passed to Localizer.load is not the one the localizer was fitted for "
                              "(weights differ)", stacklevel=2)
            obj.model_ = m
            net.to(device=m.device, dtype=m.dtype)
            for name in ("_base_mean", "_base_std", "_log_prior"):
                setattr(obj, name, getattr(obj, name).to(device=m.device, dtype=m.dtype))
        return obj

    # ---- checkpoints -------------------------------------------------------------------------
    def _fingerprint(self, t, yt, tv, yv) -> str:
        h = hashlib.sha256()
        params = self._json_params()
        params.pop("progress", None)
        params.pop("checkpoint", None)
        params.pop("distributed", None)  # a checkpoint resumes in one process or several alike
        h.update(json.dumps(params, sort_keys=True).encode())
        h.update(str(self.model_fingerprint_).encode())
        for a in (t, yt, tv, yv):
            if a is not None:
                h.update(_io.fingerprint_array(a.detach().cpu().numpy()).encode())
        return h.hexdigest()[:24]

    def _ckpt_paths(self) -> tuple[Path, Path]:
        p = Path(self.checkpoint)
        if p.suffix != ".safetensors":
            p = p / "checkpoint.safetensors"
        return p, p.with_suffix(".json")

    def _save_checkpoint(self, fp: str, stage: int, epoch: int, net: nn.Module, opt, extra: dict) -> None:
        from safetensors.torch import save_file

        st, js = self._ckpt_paths()
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        osd = opt.state_dict()
        for pid, pstate in osd["state"].items():
            for key, val in pstate.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"opt.{pid}.{key}"] = val.detach().cpu().reshape(-1).clone() if val.ndim == 0 else \
                        val.detach().cpu().contiguous()
        scalars = {f"{pid}.{key}": (val.ndim == 0) for pid, ps in osd["state"].items() for key, val in ps.items()
                   if isinstance(val, torch.Tensor)}
        record = {"format": _CKPT_FORMAT, "fingerprint": fp, "stage": stage, "epoch": epoch,
                  "param_groups": osd["param_groups"], "scalar_keys": scalars, "history": self.history_,
                  "sweep": extra.get("sweep", [])}
        with _io.atomic_path(st, suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp))
        _io.write_json(js, record)

    def _load_checkpoint(self, fp: str) -> dict | None:
        if self.checkpoint is None:
            return None
        st, js = self._ckpt_paths()
        if not (st.exists() and js.exists()):
            return None
        from safetensors.torch import load_file

        try:
            record = _io.read_json(js)
            tensors = load_file(str(st))
        except Exception as exc:
            raise RunDirError(f"checkpoint is corrupt ({type(exc).__name__}: {exc})", parameter="checkpoint",
                              got=str(st), fix="delete the checkpoint files to start afresh") from exc
        if record.get("format") != _CKPT_FORMAT or record.get("fingerprint") != fp:
            raise InputError("the checkpoint belongs to another fit (settings, model or data differ)",
                             parameter="checkpoint", expected="a checkpoint written by this same fit",
                             got=str(st), fix="delete it or pass another checkpoint path")
        net_state = {k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")}
        opt_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, key = k.split(".", 2)
                if record["scalar_keys"].get(f"{pid}.{key}"):
                    v = v.reshape(())
                opt_state.setdefault(int(pid), {})[key] = v
        return {"stage": int(record["stage"]), "epoch": int(record["epoch"]), "net": net_state,
                "opt": {"state": opt_state, "param_groups": record["param_groups"]},
                "history": record.get("history", []), "sweep": record.get("sweep", [])}


# ---- helpers --------------------------------------------------------------------------------------
@contextlib.contextmanager
def _no_warnings():
    """Silence warnings (ranks other than 0 of a data-parallel fit: rank 0 gives them once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _mix(*values: int) -> int:
    h = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def _log_odds(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p_y - log(1 - p_y) = z_y - logsumexp_{k != y} z_k, per sample."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return z_y - torch.logsumexp(others, dim=1)


def _safe_fingerprint(model: Model) -> str | None:
    try:
        return model.fingerprint()
    except Exception:
        return None


def _logits(model: Model, t: torch.Tensor) -> np.ndarray:
    with model.frozen(), torch.inference_mode():
        outs = [model.logits_t(t[s]) for s in model.chunks(len(t), t[0].numel())]
    return torch.cat(outs).detach().cpu().to(torch.float64).numpy()


def _labels(y, n: int, k: int, parameter: str) -> torch.Tensor:
    """Integer class indices ``(N,)`` from integer labels or one-hot rows; typed errors otherwise."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TargetError("labels must be numeric", parameter=parameter, expected="class indices or one-hot rows",
                          got=str(arr.dtype), fix="encode the labels as integers 0..K-1")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim == 2:
        if arr.shape[1] != k:
            raise TargetError("one-hot labels do not match the model's classes", parameter=parameter,
                              expected=f"{k} columns (the model has {k} classes)", got=f"{arr.shape[1]} columns",
                              fix="pass labels for the classes the model predicts")
        if not np.all((arr == 0) | (arr == 1)) or not np.all(arr.sum(1) == 1):
            raise TargetError("2D labels must be one-hot rows", parameter=parameter, expected="one 1 per row",
                              got="rows that are not one-hot", fix="pass class indices (N,) or one-hot rows")
        arr = arr.argmax(1)
    elif arr.ndim != 1:
        raise ShapeError("labels must be (N,) class indices or (N, K) one-hot rows", parameter=parameter,
                         expected="1 or 2 axes", got=f"shape {arr.shape}", fix="pass y as a 1D integer array")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(np.mod(arr, 1) == 0):
            raise TargetError("labels must be whole numbers", parameter=parameter, expected="integer class indices",
                              got="non-integer values", fix="round or encode the labels as 0..K-1")
    arr = arr.astype(np.int64)
    if len(arr) != n:
        raise ShapeError("one label per sample is needed", parameter=parameter, expected=f"{n} labels",
                         got=f"{len(arr)} labels", fix="pass labels aligned with the inputs")
    bad = (arr < 0) | (arr >= k)
    if bad.any():
        raise TargetError("labels do not match the model's classes", parameter=parameter,
                          expected=f"class indices 0..{k - 1} (the model has {k} classes)", got=int(arr[bad][0]),
                          fix="pass labels for the classes the model predicts")
    return torch.from_numpy(arr)


def _stratified_split(y: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Split indices into parts of the given fractions, class by class (shuffled, seeded)."""
    parts: list[list[int]] = [[] for _ in fractions]
    f = np.asarray(fractions, dtype=np.float64) / np.sum(fractions)
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        cuts = np.round(np.cumsum(f)[:-1] * len(idx)).astype(int)
        for j, chunk in enumerate(np.split(idx, cuts)):
            parts[j].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix != ".safetensors":
        p = p / "localizer.safetensors"
    return p, p.with_suffix(".json")


def _tensors_sha(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(_io.fingerprint_array(tensors[k].detach().cpu().numpy()).encode())
    return h.hexdigest()[:16]
