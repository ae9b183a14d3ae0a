"""The TRUST localizer as an estimator: ``Localizer(...).fit(model, X, y)``.

The class stores parameters, validates them, prepares the data (layout, labels, splits, baseline
statistics) and delegates: the training loop to :mod:`.training` (driven by a context from
:mod:`.context`: one process or DDP), the choice of τ to :mod:`.selection` (the joint path, or the
paper's sweep), files to :mod:`.persistence` and :mod:`.checkpoint`.

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

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .. import _io
from ..attribution import Attribution
from ..errors import DataError, InputError, NotFittedError, UnsupportedError
from ..layout import Layout, resolve_layout
from ..models import Model, load_model
from ..models.base import check_array, row_slices
from . import distributed as _distributed
from . import r2 as _r2
from .baseline import BASELINES, BaselineStats
from .common import is_number as _is_number
from .common import labels as _labels
from .common import logits as _logits
from .common import mix as _mix
from .common import safe_fingerprint as _safe_fingerprint
from .common import stratified_split as _stratified_split
from .context import make_context
from .model import (BACKBONES, KerasBackbone, MaskNet, check_sizes, default_backbone, default_backbone_kind,
                    is_keras_model, paper_backbone)
from .training import mask_logits

__all__ = ["Localizer", "OptimisticFitWarning", "OBJECTIVES", "BASELINES", "MODES", "R_METRICS"]

OBJECTIVES = ("remove", "preserve", "prior", "paper")
MODES = ("trust", "paper")
BUDGETS = ("total", "per_channel")
CI_METHODS = ("bootstrap", "delta")
R_METRICS = ("auto", "acc", "prob", "loss")

#: the defaults that ``'auto'`` resolves to in each mode (trust: chosen by benchmarks/bench_localizer.py)
TRUST_DEFAULTS = {"objective": "remove", "baseline": "dataset_mean", "sink": True, "sparsity": 0.5, "r_metric": "prob"}
PAPER_DEFAULTS = {"objective": "paper", "baseline": "zero", "sink": False, "sparsity": 0.0, "r_metric": "acc"}


#: how many times an 'auto' τ path that misses the target may be extended (4 geometric steps each)
AUTO_TAU_EXTENSIONS = 3


def auto_tau_grid(entries: int, top: float, extra: int = 0, cap: float = 1.0) -> np.ndarray:
    """The 'auto' τ path: 12 geometric values from 0.2 % to ``top`` of the mask's ``entries`` (at least
    0.5), continued by ``extra`` values of the same ratio beyond ``top``, up to ``cap`` of the entries."""
    fracs = np.geomspace(0.002, top, 12)
    if extra:
        step = fracs[-1] / fracs[-2]
        fracs = np.concatenate([fracs, top * step ** np.arange(1, extra + 1)])
        fracs = np.unique(np.minimum(fracs, cap))
    return np.unique(np.maximum(0.5, fracs * entries))


#: what ``fit_joint`` sets: restored when an extended 'auto' path is given up
_FIT_RESULT = ("net_", "tau_", "tau_index_", "tau_grid_", "calibration_path_", "r2_path_", "r2_", "r2_ci_",
               "target_reached_", "target_gap_", "best_epoch_")


def _still_rising(path, steps: int = 2) -> bool:
    """The calibration R² still rises at the end of the path: its raw estimate at the largest τ is
    above the one ``steps`` grid values before (so a longer path may reach the target)."""
    est = np.asarray(path.raw_estimate, dtype=float)
    if len(est) < 2:
        return True
    return bool(est[-1] > est[max(0, len(est) - 1 - steps)] + 1e-3)


class OptimisticFitWarning(UserWarning):
    """The localizer is fitted on data the classifier seems to have trained on: its R² interval is optimistic.

    :meth:`Localizer.fit` warns with it when the classifier's accuracy on the fitting data (against
    given labels, not its own predictions) is 1, or far above ``val_accuracy`` when that is known:
    the clean risk there is lower than on new data. Fit on a split the classifier did not train on.

    Examples
    --------
    >>> import warnings
    >>> from trustmap.localizer import OptimisticFitWarning
    >>> issubclass(OptimisticFitWarning, UserWarning)
    True
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("error", OptimisticFitWarning)  # make it an error, e.g. in a pipeline
    """


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
        mask's entries (30 % for ``objective='preserve'``; at least 0.5); when the chosen τ misses the
        target and the calibration R² still rises at the path's end, the path is continued (4 more
        values of the same ratio, a fresh fit) up to 3 times, at most to 50 % of the entries
        (removal objectives; not for 'preserve', whose target, the whole input's R², is always reached by
        keeping every entry); ``tau_grid_extended_`` says how many times. When even the longest path
        misses the target, the fit over the original path is kept (``extension_tried_`` records what
        was tried) and a warning says so. A single float fits that τ only.
    target_r2 : 'auto' | float in (0, 1]
        The R² the chosen τ must reach. 'auto' is the chance level (the R² when the masked
        predictions carry no information about the labels); it is reached when the calibration
        data cannot tell the masked classifier from chance (its upper bound reaches it). A float
        target is reached when the R²'s lower confidence bound reaches it. When no τ reaches it,
        ``tau_`` is the smallest τ whose masked risk is as high as the path's highest (within its
        interval), with a warning. When the path's first τ already reaches it, ``fit`` warns with
        :class:`~trustmap.localizer.FirstTauWarning` (the path may start too high, or the calibration split
        is too small to tell the τ values apart).
    r_metric : 'auto' | 'prob' | 'acc' | 'loss'
        The risk in R²: ``1 - p_y`` ('prob': the expected error of a prediction drawn from the
        classifier's probabilities), the 0/1 error ('acc') or the cross-entropy ('loss'). 'auto'
        (default): 'prob' (paper mode: 'acc', as dnn-locate). 'prob' grades a removal finely and
        keeps doing so when the classifier makes no error on the calibration data (as with labels
        that are its own predictions), where the 0/1 error saturates (R² (acc) is 1 for every τ
        whose masks cause any error); being bounded, it is not dominated by a few mislabeled
        samples as the cross-entropy is (their loss is large on the clean input and falls when
        anything is removed, which can make R² (loss) negative on a classifier that is right).
    mode : 'trust' | 'paper'
        See the module docstring. 'paper' is the faithful reproduction of dnn-locate.
    objective : 'auto' | 'remove' | 'preserve' | 'prior' | 'paper'
        What training minimizes on the masked input. 'preserve' (sufficiency): the smallest region
        whose *keeping* (the rest replaced by the baseline) keeps the prediction: the kept input's
        log-odds of the class up to the clean input's (at most p = 0.9); its R² is
        ``1 − risk(only the region kept) / risk(nothing kept)`` (see :mod:`.selection`) and its 'auto'
        target the whole input's R² on that scale. 'remove' (default): the true class's log-odds
        down to what the classifier gives the baseline itself (the input with every feature
        removed) and no further — information is removed, predictions are not pushed to flip;
        log-odds rather than log-probabilities keep the gradient alive for a confident classifier.
        'prior': cross-entropy to the class prior. 'paper': minus the cross-entropy (dnn-locate).
        Default chosen on the known-region tasks (benchmarks/bench_localizer.py).
    baseline : 'auto' | 'zero' | 'dataset_mean' | 'mean' | 'blur' | 'noise'
        What a masked entry is replaced by, the names as in :mod:`trustmap.baselines`: 0 (paper),
        'dataset_mean' the *training-set* per-channel mean (one constant per channel over every sample
        and position of the training split; default), 'mean' each sample's own per-channel mean, a
        Gaussian blur of the input (``blur_sigma``, in samples), or per-channel Gaussian noise with the
        training-set statistics (:mod:`.baseline`). (Before the names were aligned, 'mean' meant the
        training-set mean: records saved then are read as 'dataset_mean', with a DeprecationWarning.)
    blur_sigma : 'auto' | float > 0
        Width (in samples) of the blur baseline; 'auto': 4 % of the shortest spatial axis, at least 2.
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
    backbone : None | nn.Module | keras.Model | 'strided' | 'unet' | 'dilated' | 'paper'
        ``g``: a module ``(N, C, *spatial) -> (N, M, *spatial)`` (M = C, or 1 with
        ``per_channel=False``), or a Keras 3 network (torch backend) mapping channels-last
        ``(N, *spatial, C) -> (N, *spatial, M)`` (:class:`~trustmap.localizer.model.KerasBackbone`; pass the
        same architecture to :meth:`load`). None: chosen by
        :func:`~trustmap.localizer.model.default_backbone_kind`: 'strided' for the removal objectives on
        inputs of at least 128 entries per axis (beats of 187 samples), else 'unet', a small
        full-resolution conv encoder–decoder with coordinate channels (paper mode: the dnn-locate ECG
        example's network, 'paper'). 'strided': a light
        encoder–decoder that convolves at 1/2 to 1/8 of the input's size (~12x fewer multiply-adds than
        'unet', several times faster ``locate``; as good as 'unet' on the 187-sample distractor task with
        the removal objective, worse with 'preserve' on short signals). 'dilated': a stack of dilated
        convolutions at full resolution. benchmarks/bench_locate.py compares them (speed and masks).
    width : int
        Base number of channels of the built-in backbones ('strided', 'unet', 'dilated').
    epochs, batch_size, lr, weight_decay : training (Adam, cosine-decayed learning rate).
    early_stopping : None | int
        Patience in epochs: stop when the validation loss (the training loss on the calibration
        split at 4 fixed τ; paper mode: on the evaluation data) has not improved for that many
        epochs, and keep the best epoch's weights (``best_epoch_``). None (default): train all epochs.
    lr_schedule : 'cosine' | 'plateau'
        'cosine' (default): cosine decay to 5 % over the epochs. 'plateau': constant, halved after
        every 2 epochs without improvement of the validation loss (at least 1/64 of ``lr``); the
        best epoch's weights are kept. ``history_`` records ``val_loss`` and ``lr`` per epoch.
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
        another order), by how much depends on the task: on the distractor task of
        ``tests/test_localizer_ddp.py`` masks within 5e-3 after up to 60 steps (measured 1e-5 after
        15, 8e-4 after 45, 1.4e-3 after 60; 7e-3 and 97 % same argmax after 90 steps in
        benchmarks/bench_ddp.py, where float32 itself is 8e-2 from float64), but 7.6e-2 (96 % same
        argmax) after about 50 steps on 1000 MNIST-1D samples (the streaming tutorial): a float32 DDP
        fit is as close to the single-process fit as two float32 fits summing in different orders,
        no closer. For fits that must agree to rounding, fit a float64 classifier (the mask network
        follows its dtype).
        Backends: gloo for a CPU model, nccl for a model on ``cuda:LOCAL_RANK``. Run it with::

            torchrun --nproc-per-node 4 my_fit.py     # my_fit.py: init_process_group(), then fit
            trustmap locate --nproc 4 --model m.safetensors --data d.npz   # the CLI starts torchrun
            torchrun --nproc-per-node 4 -m trustmap.cli locate --model ... --data ...

        With a world size W the per-rank batch is ``batch_size / W``; keep ``batch_size`` to get
        the single-process result, not ``batch_size * W``.

    What the reported interval means
    --------------------------------
    ``r2_`` is the R² of the fitted localizer at ``tau_`` estimated on the held-out split, a part of
    ``X`` that neither training nor the choice of τ has seen; ``r2_ci_`` is a ``confidence``-level
    interval (paired bootstrap over the held-out samples, or the delta method) for the R² this fitted
    localizer has on the population those samples are drawn from: the randomness it covers is the
    draw of the held-out samples, given the trained mask network and τ. It covers the R² on fresh
    data only when ``X`` is like fresh data for the classifier: fitted on the classifier's own
    training data the clean risk is optimistic, and so is the interval (``fit`` warns when the
    classifier's accuracy on ``X`` is 1 or far above ``val_accuracy``).

    Attributes (after ``fit``)
    --------------------------
    tau_ : float — the chosen τ.  tau_grid_ : ndarray — the path.
    target_r2_ : float — the resolved target.
    r_metric_ : str — the resolved risk ('acc' or 'loss').
    labels_source_ : 'given' | 'predictions' — where the labels came from (``y=None``: the classifier's).
    r2_meaning_ : str — one sentence saying what the reported R² and its interval mean.
    fit_accuracy_ : float — the classifier's accuracy on the calibration split (against the labels used).
    r2_ : R2Estimate — R² at ``tau_`` on the held-out split, with its interval.
    r2_ci_ : (low, high).  r2_path_ : R2Path — the held-out path (monotone).
    calibration_path_ : R2Path — the path τ was chosen on.  history_ : list of dicts per epoch.
    world_size_ : int — the number of processes that trained it (1 without ``torch.distributed``).
    tau_grid_extended_ : int — how many times the 'auto' path was extended to reach the target (0 when
    no extension reached it: then ``extension_tried_`` holds the times, the largest τ and its R²).
    target_reached_ : bool — whether the chosen τ reaches the target on the calibration split.
    fs_ : float or None — the sampling rate (Hz) given to ``fit`` (plots then label time in seconds).

    Examples
    --------
    >>> import trustmap
    >>> loc = trustmap.Localizer().fit(model, X_unseen)     # no labels: the model's predictions
    >>> loc.tau_, loc.r2_, loc.r2_meaning_                  # chosen τ, held-out R² and its interval
    >>> masks = loc.locate(X_user)                          # an Attribution, X_user's layout
    >>> loc.save("runs/loc/localizer")                      # .safetensors + .json, no pickle
    >>> same = trustmap.Localizer.load("runs/loc/localizer", model)
    >>> pre = trustmap.Localizer(objective="preserve", baseline="zero", tau=[1, 4, 16]).fit(model, X, y)
    """

    def __init__(self, tau: Any = "auto", target_r2: Any = "auto", r_metric: str = "auto", *,
                 mode: str = "trust", objective: str = "auto", baseline: str = "auto", per_channel: bool = True,
                 budget: str = "auto", sink: Any = "auto", sparsity: Any = "auto", backbone: Any = None,
                 width: int = 16, epochs: int = 20, batch_size: int = 128, lr: float = 3e-3,
                 weight_decay: float = 0.0, calibration: float = 0.2, holdout: float = 0.2,
                 confidence: float = 0.95, ci: str = "bootstrap", n_boot: int = 2000, blur_sigma: Any = "auto",
                 seed: int = 0, progress: bool = False, checkpoint: Any = None, layout: str | None = None,
                 distributed: Any = "auto", early_stopping: int | None = None, lr_schedule: str = "cosine") -> None:
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
        self.early_stopping = early_stopping
        self.lr_schedule = lr_schedule
        self._validate()

    # ---- scikit-learn style parameters -----------------------------------------------------
    _PARAMS = ("tau", "target_r2", "r_metric", "mode", "objective", "baseline", "per_channel", "budget", "sink",
               "sparsity", "backbone", "width", "epochs", "batch_size", "lr", "weight_decay", "calibration",
               "holdout", "confidence", "ci", "n_boot", "blur_sigma", "seed", "progress", "checkpoint", "layout",
               "distributed", "early_stopping", "lr_schedule")

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
    def paper(cls, tau: Any = "auto", target_r2: Any = "auto", r_metric: str = "auto", **kwargs) -> "Localizer":
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
        if not isinstance(self.r_metric, str) or self.r_metric not in R_METRICS:
            raise InputError("unknown r_metric", parameter="r_metric", expected="'auto', 'acc', 'prob' or 'loss'",
                             got=self.r_metric, fix="use r_metric='prob' (1 - p_y), 'acc' (error rate) or 'loss'")
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
        if not (b is None or isinstance(b, nn.Module) or (isinstance(b, str) and b in BACKBONES)):
            raise InputError("backbone must be None, " + ", ".join(map(repr, BACKBONES)) + " or a torch/Keras module",
                             parameter="backbone", expected="None, a backbone name, an nn.Module or a keras.Model",
                             got=type(b).__name__,
                             fix="pass a module mapping (N, C, *spatial) to (N, M, *spatial) mask logits")
        es = self.early_stopping
        if es is not None and (isinstance(es, bool) or not isinstance(es, (int, np.integer)) or int(es) < 1):
            raise InputError("early_stopping must be None or a patience in epochs >= 1", parameter="early_stopping",
                             expected="None or an int >= 1", got=es, fix="e.g. early_stopping=3")
        if not isinstance(self.lr_schedule, str) or self.lr_schedule not in ("cosine", "plateau"):
            raise InputError("unknown lr_schedule", parameter="lr_schedule", expected="'cosine' or 'plateau'",
                             got=self.lr_schedule, fix="lr_schedule='plateau' halves the rate when the validation "
                             "loss stalls")
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
               for k in ("objective", "baseline", "sink", "sparsity", "r_metric")}
        if self.budget == "auto":
            out["budget"] = "per_channel" if (self.mode == "paper" and rank >= 2) else "total"
        else:
            out["budget"] = self.budget
        out["sparsity"] = float(out["sparsity"])
        return out

    def _make_backbone(self, rank: int, channels: int, mask_channels: int) -> tuple[nn.Module, str]:
        b = self.backbone
        if is_keras_model(b):  # a user's Keras network (channels-last), trained as a clone
            return KerasBackbone.clone_of(b), "custom"
        if isinstance(b, nn.Module):
            import copy

            return copy.deepcopy(b), "custom"
        kind = b or default_backbone_kind(self.mode, self.settings_["objective"], self.spatial_)
        if kind == "paper":
            return paper_backbone(rank, channels, mask_channels), "paper"
        return default_backbone(rank, channels, mask_channels, width=int(self.width), kind=kind), kind

    # ---- fit ----------------------------------------------------------------------------
    def fit(self, model, X, y=None, X_val=None, y_val=None, *, val_accuracy: float | None = None,
            fs: float | None = None, callback: Callable[[int, dict], Any] | None = None) -> "Localizer":
        """Train the localizer for the frozen classifier ``model`` on ``X`` (labels ``y``).

        ``y`` holds class indices ``(N,)`` or one-hot rows ``(N, K)``; ``y=None`` uses the classifier's
        predictions as labels (``labels_source_ = 'predictions'``; then the R² measures how much of the
        classifier's *own decision* the located features carry). Without ``X_val``, ``X`` is split
        into training / calibration / held-out parts (``calibration``, ``holdout``); with it, ``X``
        trains and ``X_val`` is halved into calibration and held-out parts. (Paper mode: R² on
        ``X_val``, or on the training data when none is given, as dnn-locate does.)

        Fit on data the classifier did not train on: on its training data the clean risk is lower
        than on fresh data and the R² interval is optimistic. ``val_accuracy``: the classifier's
        accuracy on validation data, when known; ``fit`` warns (:class:`OptimisticFitWarning`) when
        its accuracy on the calibration data is 1.0 or far above ``val_accuracy``.
        ``fs``: the signals' sampling rate in Hz, when known (e.g. ``Dataset.meta['sampling_rate_hz']``
        of ``datasets.load('ecg208', fs=...)``); stored as ``fs_`` (and in the saved record) so that the
        plots label their time axes in seconds. ``callback(epoch, logs)`` is called after every epoch.
        Returns
        -------
        Localizer
            ``self``, fitted: ``tau_``, ``r2_``, ``r2_ci_``, ``r2_path_``, ``history_``, ...

        Raises
        ------
        InputError, ShapeError, LayoutError
            Bad settings (checked before any work), or data the model does not take.
        LabelError
            ``y`` that is not one class index (or one-hot row) per sample of the model's classes.
        NonFiniteError
            NaN or Inf in ``X`` or in the classifier's scores.
        """
        self._validate()
        if fs is not None and (not _is_number(fs) or not math.isfinite(float(fs)) or float(fs) <= 0):
            raise InputError("fs must be a positive sampling rate in Hz", parameter="fs", expected="fs > 0 (or None)",
                             got=fs, fix="e.g. fs=125 for the ecg208 beats (Dataset.meta['sampling_rate_hz'])")
        if val_accuracy is not None and (not _is_number(val_accuracy) or not 0 <= float(val_accuracy) <= 1):
            raise InputError("val_accuracy must be a number in [0, 1]", parameter="val_accuracy",
                             expected="the classifier's accuracy on validation data", got=val_accuracy,
                             fix="pass e.g. val_accuracy=0.93, or leave it None")
        model = load_model(model)
        if not model.differentiable:
            raise UnsupportedError("the localizer trains through the classifier and needs its gradients",
                                   parameter="model", expected="a torch or Keras model",
                                   got=getattr(model, "framework", type(model).__name__),
                                   fix="load the model from its torch or Keras form, not ONNX")
        t, lay = model.to_internal(X, self.layout, "X")
        check_sizes(t.shape[2:])
        k = model.n_classes
        clean_all = _logits(model, t)
        _check_finite_logits(clean_all, "X")
        if y is None:
            if y_val is not None:
                raise InputError("y_val was given without y", parameter="y", expected="labels for X too", got=None,
                                 fix="pass y, or leave both None to use the classifier's predictions")
            yt = torch.from_numpy(clean_all.argmax(1).astype(np.int64))
            self.labels_source_ = "predictions"
        else:
            yt = _labels(y, len(t), k, "y")
            self.labels_source_ = "given"
        if X_val is not None:
            tv, _ = model.to_internal(X_val, lay.name, "X_val")
            clean_v = _logits(model, tv)
            _check_finite_logits(clean_v, "X_val")
            if y_val is None:
                if y is not None:
                    raise InputError("X_val was given without y_val", parameter="y_val", expected="labels for X_val",
                                     got=None, fix="pass y_val, or leave X_val=None to split X")
                yv = torch.from_numpy(clean_v.argmax(1).astype(np.int64))
            else:
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
        self.r_metric_ = settings["r_metric"]
        self.val_accuracy_ = None if val_accuracy is None else float(val_accuracy)
        self.fs_ = None if fs is None else float(fs)
        ctx = make_context(self.distributed, model.device)
        self.world_size_ = ctx.world
        with model.frozen(), ctx.quiet():
            self._fit(ctx, model, t, yt, tv, yv, settings, callback)
        self.r2_meaning_ = self._r2_meaning()
        return self

    def _fit(self, ctx, model: Model, t, yt, tv, yv, settings, callback) -> None:
        from . import checkpoint as _ckpt
        from .selection import fit_joint, fit_sweep

        fp = _ckpt.fingerprint(self, t, yt, tv, yv)
        if not ctx.all_same(fp):
            raise InputError("the processes of the data-parallel fit were given different inputs",
                             parameter="distributed", expected="the same model, data (X, y, X_val, y_val), "
                             "settings and seed on every rank", got=f"{ctx.world} ranks that disagree",
                             fix="give every rank the full data set (the batches are split among them), or pass "
                                 "distributed=False to fit independently in each process")
        rng = np.random.default_rng(self.seed)
        paper = self.mode == "paper"
        metric = self.r_metric_
        # splits -----------------------------------------------------------------------------
        if paper:
            x_tr, y_tr = t, yt
            x_ev, y_ev = (t, yt) if tv is None else (tv, yv)
            x_cal = y_cal = x_ho = y_ho = None
            self.split_ = {"train": int(len(t)), "evaluation": "train" if tv is None else "X_val",
                           "n_evaluation": int(len(x_ev))}
        else:
            if tv is None:
                train_idx, cal_idx, ho_idx = _stratified_split(
                    yt.cpu().numpy(), [1 - self.calibration - self.holdout, self.calibration, self.holdout], rng)
                x_tr, y_tr = t[train_idx], yt[train_idx]
                x_cal, y_cal, x_ho, y_ho = t[cal_idx], yt[cal_idx], t[ho_idx], yt[ho_idx]
            else:
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
        sigma = float(self.blur_sigma) if self.blur_sigma != "auto" else max(2.0, 0.04 * min(self.spatial_))
        self.base_stats_ = BaselineStats.from_training(x_tr, sigma)
        # clean predictions, the classifier's chance check, the target ---------------------------
        clean_ev = _logits(model, x_ev)
        self._check_not_chance(clean_ev, y_ev)
        self._check_optimistic(clean_ev, y_ev)
        risk_c = _r2.per_sample_risk(torch.from_numpy(clean_ev), y_ev.cpu(), metric).numpy()
        if self.target_r2 != "auto":
            self.target_r2_ = float(self.target_r2)
        elif settings["objective"] == "preserve":
            from .training import baseline_risks

            # the whole input's R² on the 'preserve' scale (paper mode; joint mode sets it in selection)
            self.target_r2_ = float(_r2.r2_value(risk_c.mean(), baseline_risks(self, model, x_ev, y_ev).mean()))
        elif paper:
            perm = _r2.permutation_risk(y_ev.cpu().numpy(), clean_ev, metric, rng)
            self.target_r2_ = float(_r2.r2_value(risk_c.mean(), perm))
        else:
            chance = _r2.chance_risk(y_cal.cpu().numpy(), clean_ev, metric, self.n_classes_)
            self.target_r2_ = float(_r2.r2_value(risk_c.mean(), chance))
        if not paper and risk_c.mean() == 0 and metric == "acc" and settings["objective"] != "preserve":
            warnings.warn("the classifier makes no error on the calibration split, so R² (acc) is 1 for every "
                          "tau whose masks cause any error; r_metric='prob' grades the removal more finely",
                          stacklevel=3)
        # τ grid -----------------------------------------------------------------------------
        mask_channels = self.channels_ if self.per_channel else 1
        grid = self._tau_grid_param()
        if grid is None:
            entries = mask_channels * int(np.prod(self.spatial_))
            if settings["budget"] == "per_channel":
                entries = int(np.prod(self.spatial_))
            # removal: up to 10 % of the entries; keeping ('preserve'): up to 30 %, since what must be kept
            # to restore a prediction is usually more than what must be removed to spoil it
            top = 0.3 if settings["objective"] == "preserve" else 0.1
            grid = auto_tau_grid(entries, top)
        self.tau_grid_ = grid
        self.tau_grid_extended_ = 0
        self.extension_tried_ = None
        self.mask_channels_ = mask_channels
        self.log_prior_ = torch.log(torch.bincount(y_tr.cpu(), minlength=self.n_classes_).to(torch.float64)
                                    .clamp_min(1) / len(y_tr)).to(t.dtype).to(t.device)
        state = ctx.from_main(lambda: _ckpt.load_checkpoint(self, fp))
        if paper:
            fit_sweep(self, ctx, model, x_tr, y_tr, x_ev, y_ev, risk_c, grid, state, fp, callback)
        else:
            # 'preserve' is not extended: keeping every entry trivially reaches its target (the whole input)
            auto = self._tau_grid_param() is None and settings["objective"] != "preserve"
            cap = 0.5
            history: list[dict] = []
            first = None  # the original path's result, kept when no extension reaches the target
            for stage in range(AUTO_TAU_EXTENSIONS + 1):
                # an 'auto' path that misses the target is extended (a fresh fit over the longer path) while
                # the calibration R² still rises at its end and the path is below its cap
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    fit_joint(self, ctx, model, x_tr, y_tr, x_cal, y_cal, x_ho, y_ho, risk_c, clean_ev, grid, state,
                              fp, callback, stage=stage)
                history += self.history_
                if stage == 0:
                    first = ({k: getattr(self, k) for k in _FIT_RESULT if hasattr(self, k)}, list(caught))
                more = (auto and not self.target_reached_ and stage < AUTO_TAU_EXTENSIONS
                        and grid[-1] < cap * entries * (1 - 1e-9) and _still_rising(self.calibration_path_))
                if not more:
                    break
                grid = auto_tau_grid(entries, top, extra=4 * (stage + 1), cap=cap)
                self.tau_grid_ = grid
                self.tau_grid_extended_ = stage + 1
            self.history_ = history
            tried = self.tau_grid_extended_
            if tried and not self.target_reached_:
                # the longest path misses the target too: keep the original path's fit (its masks stay within
                # the path's first 10 % instead of the largest tau tried), and say so
                longest, r2_top = grid[-1], self.calibration_path_.estimate[-1]
                for k, v in first[0].items():
                    setattr(self, k, v)
                self.history_ = history
                self.tau_grid_extended_ = 0
                caught = first[1]
                self.extension_tried_ = {"times": tried, "largest_tau": float(longest),
                                         "calibration_r2_there": float(r2_top)}
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            if tried and not self.target_reached_:
                warnings.warn(f"the 'auto' tau path was extended {tried} time(s), up to tau = {longest:.3g}, and the "
                              f"target R² {self.target_r2_:.3f} was still not reached on the calibration split ({r2_top:.3f} "
                              "at the largest tau): the fit over the original path is kept", stacklevel=3)
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

    def _check_optimistic(self, clean_logits: np.ndarray, y: torch.Tensor) -> None:
        """Warn when the fitting data look like the classifier's training data (accuracy 1, or far
        above the recorded validation accuracy): the clean risk, and so the R² interval, is optimistic."""
        acc = float(np.mean(clean_logits.argmax(1) == y.cpu().numpy()))
        self.fit_accuracy_ = acc
        if self.labels_source_ == "predictions":
            return  # accuracy against its own predictions is 1 by construction: says nothing
        n = len(clean_logits)
        why = None
        if acc >= 1.0:
            why = "accuracy 1.000"
        elif self.val_accuracy_ is not None:
            se = math.sqrt(max(self.val_accuracy_ * (1 - self.val_accuracy_), 1e-4) / max(n, 1))
            if acc - self.val_accuracy_ > max(0.02, 3 * se):
                why = f"accuracy {acc:.3f}, far above its validation accuracy {self.val_accuracy_:.3f}"
        if why is not None:
            warnings.warn(f"the classifier scores {why} on the data the localizer is calibrated on: if it was trained "
                          "on these data, its risk here is lower than on new data and the R² interval is optimistic. "
                          "Fit the localizer on data the classifier did not train on (a test or validation split).",
                          OptimisticFitWarning, stacklevel=4)

    def _r2_meaning(self) -> str:
        metric = {"acc": "0/1 error", "prob": "1 - p(label)", "loss": "cross-entropy"}[self.r_metric_]
        lab = "the classifier's own predictions" if self.labels_source_ == "predictions" else "the given labels"
        level = f"{int(round(float(self.confidence) * 100))}%"
        where = ("the training data (paper mode, as dnn-locate)" if self.mode == "paper" and
                 self.split_.get("evaluation") == "train" else
                 "X_val" if self.mode == "paper" else
                 f"a held-out split of {self.split_['holdout']} samples that neither training nor the choice of tau "
                 "saw")
        if self.settings_["objective"] == "preserve":
            what = ("R² = 1 - risk(only the located region kept, the rest replaced by the baseline) / risk(baseline "
                    "alone): the share of the classifier's predictive power the region alone carries")
        else:
            what = ("R² = 1 - risk(input) / risk(input with the located region replaced by the baseline): the share "
                    "of the classifier's predictive power the region carries")
        return (f"{what}; risk = {metric} against {lab}, at tau = {self.tau_:.4g}, estimated on {where}; the "
                f"{level} interval ({self.ci}) covers the R² of this fitted localizer on new samples like those, over "
                "the random draw of the evaluation samples (the trained mask network and tau held fixed).")

    # ---- masks -----------------------------------------------------------------------------
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

    def _logits_z(self, x: torch.Tensor) -> torch.Tensor:
        return mask_logits(self.net_, x)

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

    def _masks_internal(self, t: torch.Tensor, tau: float, z: torch.Tensor | None = None) -> np.ndarray:
        """Masks at ``tau`` for the internal batch ``t``, in chunks; ``z``: mask logits to use instead of
        the network's (refined ones, on the network's device)."""
        net = self.net_
        t = t.to(device=self._net_device(), dtype=self._net_dtype())
        was = net.training
        net.eval()
        try:
            with torch.inference_mode():
                out = np.empty(tuple(t.shape), dtype=np.float32)
                for s in _infer_chunks(len(t), t[0].numel()):
                    d = net.masks(net.logits(t[s]) if z is None else z[s], tau)
                    if d.shape[1] != t.shape[1]:
                        d = d.expand(-1, t.shape[1], *d.shape[2:])
                    out[s] = d.cpu().numpy()
        finally:
            net.train(was)
        return out

    def _refined_masks(self, t: torch.Tensor, y: torch.Tensor, tau: float, steps: int, fractions) -> tuple:
        """Masks at ``tau`` from per-sample refined logits (:mod:`.refine`), and their record."""
        from .refine import model_passes, refine_logits

        net, model = self.net_, self.model_
        t = t.to(device=self._net_device(), dtype=self._net_dtype())
        was = net.training
        net.eval()
        try:
            z, info = refine_logits(self, model, t, y, steps, fractions)
        finally:
            net.train(was)
        maps = self._masks_internal(t, tau, z)
        passes = model_passes(steps, fractions)
        return maps, {"refine": int(steps), "refine_budget": [float(f) for f in fractions],
                      "refine_objective_before": info["before"], "refine_objective_after": info["after"],
                      "refine_improved": info["improved"], "refine_forward_passes": passes["forward"],
                      "refine_backward_passes": passes["backward"]}

    def _net_device(self):
        return next(self.net_.parameters()).device

    def _net_dtype(self):
        return next(self.net_.parameters()).dtype

    def locate(self, X, y=None, tau: float | None = None, layout: str | None = None, *, refine: int = 0,
               refine_budget: Any = None) -> Attribution:
        """The masks δ(X) as an :class:`Attribution` in the caller's layout (entries in [0, 1)).

        ``targets`` are ``y`` when given, else the classifier's predictions (-1 when the
        localizer was loaded without its model).

        With ``refine=n`` each sample's mask is refined after the mask network's one pass: ``n`` batched
        gradient steps on its own mask logits of the objective the masks are ranked for (keep the
        top ``refine_budget`` of the entries and keep the prediction, 'preserve'; remove it and spoil
        the prediction, the removal objectives; averaged over the budgets when several), a sample that
        does not improve keeping its amortized mask (:mod:`trustmap.localizer.refine`). It costs ``n``
        forward + backward passes of the classifier per sample plus ``2 · len(budgets)`` forward passes,
        where the amortized masks cost none; ``extras`` record them and the objective before / after.

        Parameters
        ----------
        X : array or tensor
            Inputs in any layout the classifier accepts (one forward pass of the mask network per batch).
        y : array, optional
            Labels recorded as the maps' ``targets``.
        tau : float, optional
            A τ of the fitted path (default ``tau_``); not for paper mode, trained for one τ.
        layout : str, optional
            Layout of ``X`` when its shape is ambiguous.
        refine : int, default 0
            Gradient steps of per-sample refinement (0: the mask network's masks as they are).
        refine_budget : None, float or sequence of floats
            The fraction(s) of the mask's entries (per budget group) the refinement keeps or removes, the
            steps cycling through them. None: 0.1, 0.2, 0.3, 0.5 for 'preserve' (an insertion curve),
            0.05 to 0.6 for the removal objectives (a deletion curve); 0.3 is the drop / increase
            protocol's budget. Only with ``refine > 0``.

        Returns
        -------
        Attribution
            ``maps`` with ``X``'s shape and layout, method ``'trust'``, ``params['tau']``; after refinement
            ``extras`` also hold ``refine`` (steps), ``refine_budget``, per-sample
            ``refine_objective_before`` / ``refine_objective_after`` and ``refine_improved``, and
            ``refine_forward_passes`` / ``refine_backward_passes`` (classifier passes per sample).

        Raises
        ------
        NotFittedError
            Before ``fit`` (or ``load``).
        InputError, UnsupportedError
            A τ that is not positive, or another τ in paper mode; ``refine`` not an int >= 0,
            ``refine_budget`` not fractions in (0, 1) or given without ``refine``, or refinement asked
            of a localizer loaded without its classifier.

        Examples
        --------
        >>> att = loc.locate(X, refine=30, refine_budget=0.3)       # doctest: +SKIP
        >>> att.extras["refine_objective_after"].mean() <= att.extras["refine_objective_before"].mean()  # doctest: +SKIP
        True
        """
        from .refine import check_refine

        self._check_fitted()
        steps, fractions = check_refine(refine, refine_budget, self.settings_["objective"])
        if refine_budget is not None and steps == 0:
            raise InputError("refine_budget is used only by refinement", parameter="refine_budget",
                             expected="refine > 0 with it (or no refine_budget)", got=repr(refine_budget),
                             fix="pass refine=30 (gradient steps) too, or drop refine_budget")
        model = getattr(self, "model_", None)
        if steps and model is None:
            raise InputError("refinement needs the classifier", parameter="refine",
                             expected="a localizer with its model (fit, or Localizer.load(path, model=...))",
                             got="a localizer loaded without its model",
                             fix="load it with Localizer.load(path, model=...) or pass refine=0")
        t, lay = self._internal(X, layout)
        tau = self._check_tau(tau)
        if y is not None:
            targets = _labels(y, len(t), self.n_classes_, "y").cpu().numpy()
        elif model is not None:
            targets = _logits(model, t).argmax(1)
        else:
            targets = np.full(len(t), -1, dtype=np.int64)
        extras: dict[str, Any] = {"tau": tau}
        if steps:
            maps, info = self._refined_masks(t, torch.from_numpy(np.asarray(targets, dtype=np.int64)), tau, steps,
                                             fractions)
            extras.update(info)
        else:
            maps = self._masks_internal(t, tau)
        params = self._json_params()
        extras["mask_sum"] = maps.reshape(len(maps), -1).sum(1)
        if hasattr(self, "r2_"):
            extras.update({"r2": self.r2_.estimate, "r2_low": self.r2_.low, "r2_high": self.r2_.high,
                           "r2_tau": self.r2_.tau, "target_r2": self.target_r2_,
                           "r2_metric": self.r_metric_, "r2_meaning": getattr(self, "r2_meaning_", None),
                           "labels_source": getattr(self, "labels_source_", None),
                           "objective": self.settings_["objective"]})
        prov = {"seed": int(self.seed), "model": getattr(self, "model_fingerprint_", None),
                "data": _io.fingerprint_array(np.ascontiguousarray(t.cpu().numpy()))}
        return Attribution(lay.from_internal(maps), targets, "trust", params, lay.name, extras, prov)

    def r2(self, X, y=None, tau: float | None = None, model=None, layout: str | None = None) -> _r2.R2Estimate:
        """R² of the masks at ``tau`` (default ``tau_``) on ``(X, y)`` with its confidence interval
        (``y=None``: the classifier's predictions), defined as for the fit (see ``r2_meaning_``); the
        interval covers this localizer's R² on the population ``X`` is drawn from, over the draw of ``X``."""
        self._check_fitted()
        model = load_model(model) if model is not None else getattr(self, "model_", None)
        if model is None:
            raise InputError("a loaded localizer needs its classifier to compute R²", parameter="model",
                             expected="the model the localizer was fitted for", got=None,
                             fix="pass model=... (or Localizer.load(path, model=...))")
        from .context import LocalContext
        from .selection import summary
        from .training import baseline_risks, masked_risks

        t, _ = model.to_internal(X, layout or self.layout, "X")
        tau = self._check_tau(tau)
        with model.frozen():
            clean = _logits(model, t)
            _check_finite_logits(clean, "X")
            yt = (torch.from_numpy(clean.argmax(1).astype(np.int64)) if y is None
                  else _labels(y, len(t), self.n_classes_, "y"))
            risk_c = _r2.per_sample_risk(torch.from_numpy(clean), yt.cpu(), self.r_metric_).numpy()
            m = masked_risks(self, LocalContext(), model, t, yt, np.array([tau]))
            base = baseline_risks(self, model, t, yt) if self.settings_["objective"] == "preserve" else None
        s = summary(self, risk_c, m, base, _mix(self.seed, 3))
        return _r2.R2Estimate(float(s["estimate"][0]), float(s["low"][0]), float(s["high"][0]), float(self.confidence),
                              self.r_metric_, self.ci, int(len(t)), float(s["clean"][0]), float(s["masked"][0]), tau)

    # ---- plots ------------------------------------------------------------------------------
    def plot_r2_path(self, **kwargs):
        """The held-out R² path with its confidence band against τ (and the target, the chosen τ)."""
        self._check_fitted()
        from .plots import plot_r2_path

        return plot_r2_path(self.r2_path_, tau=self.tau_, target=self.target_r2_, **kwargs)

    def da_plot(self, X, y=None, n_per_class: int = 3, **kwargs):
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
        from .persistence import save

        return save(self, path)

    @classmethod
    def load(cls, path, model=None, backbone: nn.Module | None = None) -> "Localizer":
        """Read a localizer written by :meth:`save`. ``model`` (optional) enables :meth:`r2` and
        predicted targets; ``backbone`` is needed when it was fitted with a custom module."""
        from .persistence import load

        return load(cls, path, model=model, backbone=backbone)


def _check_finite_logits(logits: np.ndarray, parameter: str) -> None:
    if not np.all(np.isfinite(logits)):
        bad = int((~np.isfinite(logits)).any(1).sum())
        raise DataError("the classifier's logits are not finite", parameter=parameter,
                        expected="finite logits for every sample", got=f"NaN or infinite logits for {bad} sample(s)",
                        fix="check the model's weights and the inputs' scale (standardize X; no NaN/Inf in X)")


def _infer_chunks(n: int, per_sample: int) -> list[slice]:
    """Chunks for mask inference: ~4 MB of input per chunk (cache-friendly, bounded memory)."""
    return row_slices(n, min(8192, (1 << 20) // max(1, per_sample)))
