"""Choosing τ: the joint path (one mask network for every τ, τ chosen on a calibration split, R²
reported on a held-out split) or the paper's sweep (a network per τ, in order, stop at the first
τ whose R² reaches the target).

The R² of each objective:

removal (every objective but 'preserve')
    ``R² = 1 − risk(x) / risk(x without the region)``: the share of the classifier's predictive
    power that removing the region takes away (1: all of it).
'preserve'
    ``R² = 1 − risk(only the region kept) / risk(nothing kept)``: the share of the predictive
    power the kept region alone restores, against the baseline alone (1: all of it). Its 'auto'
    target is the whole input's R² on the same scale, ``1 − risk(x) / risk(nothing kept)``: the
    chosen τ is the smallest whose kept region cannot be told from the whole input.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..models import Model
from . import r2 as _r2
from .common import logits, mix
from .training import baseline_risks, masked_risks, progress_bar, train

__all__ = ["fit_joint", "fit_sweep", "r2_path", "summary", "FirstTauWarning", "first_tau_message"]


def summary(loc, clean: np.ndarray, masked: np.ndarray, base: np.ndarray | None, seed: int) -> dict:
    """R² (estimate, low, high) per τ for the loc's objective: ``masked`` ``(T, N)`` are the risks of the
    composed inputs; ``base`` the baseline-alone risks ('preserve')."""
    level = float(loc.confidence)
    if loc.settings_["objective"] == "preserve":
        return _r2.r2_keep_summary(masked, base, level=level, method=loc.ci, n_boot=int(loc.n_boot), seed=seed)
    return _r2.r2_summary(clean, masked, level=level, method=loc.ci, n_boot=int(loc.n_boot), seed=seed)


def r2_path(loc, clean, masked, base, seed, split) -> _r2.R2Path:
    s = summary(loc, clean, masked, base, seed)
    est = _r2.isotonic(s["estimate"])
    low = np.minimum(_r2.isotonic(s["low"]), est)
    high = np.maximum(_r2.isotonic(s["high"]), est)
    return _r2.R2Path(loc.tau_grid_.copy(), est, low, high, s["estimate"], s["low"], s["high"], split,
                      int(len(clean)), float(loc.confidence), loc.r_metric_, loc.target_r2_)


class FirstTauWarning(UserWarning):
    """The target is reached at the smallest τ of the path: the path may start too high, or the calibration
    split is too small to tell the τ values apart (its intervals are wide and the monotone path pools them),
    so ``tau_`` is the first τ for want of evidence, not because a small region carries the prediction.

    :meth:`~trustmap.Localizer.fit` warns with it (the fit is kept); pass smaller τ values or more samples.

    Examples
    --------
    >>> from trustmap.localizer import FirstTauWarning
    >>> issubclass(FirstTauWarning, UserWarning)
    True
    """


def first_tau_message(grid, cal) -> str:
    return (f"the target R² is reached already at the smallest tau on the path (tau_ = {grid[0]:.3g}; calibration "
            f"R² {cal.raw_estimate[0]:.3f} [{cal.raw_low[0]:.3f}, {cal.raw_high[0]:.3f}], n = {cal.n}, the path's "
            f"monotone lower bound {cal.low[0]:.3f} to {cal.low[-1]:.3f}): either the path starts too high, or the "
            "calibration split is too small to tell the tau values apart, and tau_ is the first for want of "
            "evidence. Pass smaller tau values, or fit on more samples (a larger calibration split).")


def _choose(loc, grid, masked_cal, risk_c, base_cal, cal, y_cal, clean_cal) -> int:
    """Index of the chosen τ on the calibration path (warns when the target is out of reach)."""
    level = float(loc.confidence)
    preserve = loc.settings_["objective"] == "preserve"
    if loc.target_r2 == "auto":
        if preserve:  # the kept region's risk cannot be told from the whole input's
            low = _r2.boot_quantiles(masked_cal - risk_c[None, :], level, int(loc.n_boot), mix(loc.seed, 1))[0]
            reach = _r2.isotonic(-low) >= 0
        else:
            gap = _r2.target_gap(masked_cal, y_cal.cpu().numpy(), clean_cal, loc.r_metric_, loc.n_classes_,
                                 level, int(loc.n_boot), mix(loc.seed, 1))
            reach = _r2.isotonic(gap["high"]) >= 0
            loc.target_gap_ = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in gap.items()}
    else:
        reach = cal.low >= loc.target_r2_ - 1e-12
    hit = np.flatnonzero(reach)
    if len(hit):
        loc.target_reached_ = True
        if hit[0] == 0 and len(grid) > 1:
            warnings.warn(first_tau_message(grid, cal), FirstTauWarning, stacklevel=5)
        return int(hit[0])
    # the target is out of reach: the smallest tau whose risk cannot be told apart from the best the
    # path reaches (no later tau removes, or keeps, significantly more)
    # paired: each τ against the best τ sample by sample, so what every τ shares (e.g. the large risks
    # of mislabeled samples) cancels instead of widening every interval
    means = masked_cal.mean(1)
    best = int(np.argmin(means) if preserve else np.argmax(means))
    lo, hi = _r2.boot_quantiles(masked_cal - masked_cal[best][None, :], level, int(loc.n_boot), mix(loc.seed, 5))
    if preserve:
        i = int(np.flatnonzero(lo <= 1e-12)[0])
    else:
        i = int(np.flatnonzero(hi >= -1e-12)[0])
    loc.target_reached_ = False
    vague = (f" The calibration split (n = {cal.n}) cannot tell tau = {grid[i]:.3g} from the path's best tau = "
             f"{grid[best]:.3g}: tau_ is the smallest for want of evidence, not because a small region does as well; "
             "fit on more samples." if i == 0 and best > 0 else "")
    warnings.warn(f"no tau on the path reached the target R² {loc.target_r2_:.3f} (calibration R² at the "
                  f"largest tau {grid[-1]:.3g}: {cal.estimate[-1]:.3f}); tau_ = {grid[i]:.3g} is the smallest "
                  f"tau whose {'kept' if preserve else 'masked'} risk is as {'low' if preserve else 'high'} as the "
                  "path's (within its interval). Pass larger tau values or a lower target_r2." + vague, stacklevel=5)
    return i


def fit_joint(loc, ctx, model: Model, x_tr, y_tr, x_cal, y_cal, x_ho, y_ho, risk_c, clean_cal, grid, state, fp,
              callback, stage: int = 0) -> None:
    """One mask network for the whole path ``grid``; ``stage``: 0, or k for the k-th extension of an
    'auto' path (its own network seed and checkpoint stage)."""
    loc.history_ = []
    net = loc._new_net(stage)
    if state is not None and state.get("stage") != stage:
        state = None
    with progress_bar(loc, ctx, int(loc.epochs)) as bar:
        if bar is not None and state is not None:
            bar.update(int(state["epoch"]) + 1)
        train(loc, ctx, model, net, x_tr, y_tr, float(grid.min()), float(grid.max()), stage, state, fp, {}, callback,
              bar, val=(x_cal, y_cal))
    loc.net_ = net
    level = float(loc.confidence)
    preserve = loc.settings_["objective"] == "preserve"
    # calibration path: choose τ ------------------------------------------------------
    masked_cal = masked_risks(loc, ctx, model, x_cal, y_cal, grid)
    base_cal = baseline_risks(loc, model, x_cal, y_cal) if preserve else None
    if preserve and loc.target_r2 == "auto":
        loc.target_r2_ = float(_r2.r2_value(risk_c.mean(), base_cal.mean()))
    cal = r2_path(loc, risk_c, masked_cal, base_cal, mix(loc.seed, 1), "calibration")
    loc.calibration_path_ = cal
    i = _choose(loc, grid, masked_cal, risk_c, base_cal, cal, y_cal, clean_cal)
    loc.tau_ = float(grid[i])
    loc.tau_index_ = i
    # held-out: report ----------------------------------------------------------------------
    clean_ho = logits(model, x_ho)
    risk_ho = _r2.per_sample_risk(torch.from_numpy(clean_ho), y_ho.cpu(), loc.r_metric_).numpy()
    masked_ho = masked_risks(loc, ctx, model, x_ho, y_ho, grid)
    base_ho = baseline_risks(loc, model, x_ho, y_ho) if preserve else None
    ho = r2_path(loc, risk_ho, masked_ho, base_ho, mix(loc.seed, 2), "holdout")
    loc.r2_path_ = ho
    clean_r, masked_r = ((float(masked_ho[i].mean()), float(base_ho.mean())) if preserve
                         else (float(risk_ho.mean()), float(masked_ho[i].mean())))
    loc.r2_ = _r2.R2Estimate(float(ho.raw_estimate[i]), float(ho.raw_low[i]), float(ho.raw_high[i]), level,
                             loc.r_metric_, loc.ci, int(len(x_ho)), clean_r, masked_r, loc.tau_)
    loc.r2_ci_ = (loc.r2_.low, loc.r2_.high)


def fit_sweep(loc, ctx, model: Model, x_tr, y_tr, x_ev, y_ev, risk_c, grid, state, fp, callback) -> None:
    loc.history_ = []
    level = float(loc.confidence)
    done: list[dict] = list(state.get("sweep", [])) if state is not None else []
    net = None
    reached = False
    preserve = loc.settings_["objective"] == "preserve"
    with progress_bar(loc, ctx, int(loc.epochs) * len(grid)) as bar:
        for stage, tau in enumerate(grid):
            if stage < len(done):  # finished before an interruption (its result is in the checkpoint)
                if bar is not None:
                    bar.update(int(loc.epochs))
                continue
            net = loc._new_net(stage)
            st = state if (state is not None and state.get("stage") == stage) else None
            if bar is not None and st is not None:
                bar.update(int(st["epoch"]) + 1)
            train(loc, ctx, model, net, x_tr, y_tr, float(tau), float(tau), stage, st, fp,
                  {"tau": float(tau), "sweep": done}, callback, bar, val=(x_ev, y_ev))
            loc.net_ = net
            masked = masked_risks(loc, ctx, model, x_ev, y_ev, np.array([tau]))
            base = baseline_risks(loc, model, x_ev, y_ev) if preserve else None
            s = summary(loc, risk_c, masked, base, mix(loc.seed, 1))
            done.append({"tau": float(tau), "estimate": float(s["estimate"][0]), "low": float(s["low"][0]),
                         "high": float(s["high"][0]), "masked_risk": float(masked[0].mean()),
                         "clean_risk": float(s["clean"][0]), "reference_risk": float(s["masked"][0])})
            if done[-1]["estimate"] >= loc.target_r2_:
                reached = True
                break
    n_done = len(done)
    taus = grid[:n_done]
    e = np.asarray([d["estimate"] for d in done])
    lo = np.asarray([d["low"] for d in done])
    hi = np.asarray([d["high"] for d in done])
    path = _r2.R2Path(taus, e, lo, hi, e.copy(), lo.copy(), hi.copy(), loc.split_["evaluation"], int(len(x_ev)),
                      level, loc.r_metric_, loc.target_r2_)
    loc.calibration_path_ = path
    loc.r2_path_ = path
    loc.target_reached_ = reached
    if not reached:
        warnings.warn(f"the localizer can not reach the target R² {loc.target_r2_:.3f}; increase tau", stacklevel=5)
    loc.tau_ = float(taus[-1])
    loc.tau_index_ = n_done - 1
    loc.net_ = net
    loc.sweep_ = done
    last = done[-1]
    clean_r = last.get("clean_risk", float(risk_c.mean())) if preserve else float(risk_c.mean())
    masked_r = last.get("reference_risk", last["masked_risk"]) if preserve else last["masked_risk"]
    loc.r2_ = _r2.R2Estimate(float(e[-1]), float(lo[-1]), float(hi[-1]), level, loc.r_metric_, loc.ci,
                             int(len(x_ev)), float(clean_r), float(masked_r), loc.tau_)
    loc.r2_ci_ = (loc.r2_.low, loc.r2_.high)
