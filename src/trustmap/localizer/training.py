"""The training loop of the mask network and the evaluation of masked risks, driven by a context
(:mod:`trustmap.localizer.context`: one process, or DDP) through one interface.

The objectives (what training minimizes on the composed input; ``logits`` are the frozen
classifier's on it, ``ref`` a per-sample reference log-odds):

==============  ============================================================================================
``'remove'``    input ``x ⊙ (1 − δ) + δ ⊙ b``; ``relu(logodds_y − ref)`` with ``ref`` the log-odds on the
                baseline ``b`` itself: remove information down to "every feature removed", no further.
``'preserve'``  input ``b + δ ⊙ (x − b)`` (keep the region, the rest is the baseline);
                ``relu(ref − logodds_y)`` with ``ref`` the clean input's log-odds, capped at
                :data:`PRESERVE_CAP` (p = 0.9): keep the prediction as sure as it was, up to that.
``'prior'``     cross-entropy to the class prior on the removed input.
``'paper'``     minus the cross-entropy on the removed input (dnn-locate).
==============  ============================================================================================

Each with the sparsity penalty ``λ · sum(δ)/τ`` (ramped up over the first quarter of training).

"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
from torch import nn

from ..models import Model
from . import r2 as _r2
from .baseline import REFERENCE, baseline
from .common import chunks, log_odds, mix
from .model import MaskNet, apply_mask

__all__ = ["compose", "reference", "loss", "train", "masked_risks", "mask_logits", "progress_bar", "PRESERVE_CAP",
           "HEAD_LR_MULT"]

HEAD_LR_MULT = 10.0
#: 'preserve' asks the kept input for the clean log-odds, at most this much (p = 0.9)
PRESERVE_CAP = math.log(0.9 / 0.1)


def compose(x: torch.Tensor, delta: torch.Tensor, base: torch.Tensor | None, objective: str) -> torch.Tensor:
    """The classifier's input for mask ``delta``: the region removed (every objective but
    'preserve'), or kept with the rest replaced by the baseline ('preserve')."""
    if objective == "preserve":
        return delta * x if base is None else base + delta * (x - base)
    return apply_mask(x, delta, base)


def reference(loc, model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Per-sample reference log-odds for 'remove' (on the baseline itself) and 'preserve' (on the
    clean input, capped); None for the other objectives."""
    kind = loc.settings_["objective"]
    if kind not in ("remove", "preserve"):
        return None
    bkind = loc.settings_["baseline"]
    out = []
    with model.frozen(), torch.inference_mode():
        for s in chunks(len(x), x[0].numel()):
            xb = x[s]
            if kind == "preserve":
                out.append(log_odds(model.logits_t(xb), y[s]).clamp_max(PRESERVE_CAP))
            else:
                base = baseline(xb, REFERENCE.get(bkind, bkind), loc.base_stats_, explicit_zero=True)
                out.append(log_odds(model.logits_t(base), y[s]))
    return torch.cat(out).clone()


def loss(settings: dict, log_prior: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, delta: torch.Tensor,
         tau: torch.Tensor, ref: torch.Tensor | None, progress: float = 1.0, scale: float | None = None
         ) -> torch.Tensor:
    """The training loss: per-sample terms averaged over the batch. ``scale`` (data-parallel): the
    shard's per-sample *sum* times ``scale`` (= world size / global batch size), so the gradients
    DDP averages over the ranks are those of the global batch's mean."""
    kind = settings["objective"]
    logp = torch.log_softmax(logits, dim=1)
    lp_y = logp.gather(1, y[:, None])[:, 0]
    if kind == "paper":
        obj = lp_y  # minimize log p_y  <=> maximize the cross-entropy
    elif kind == "prior":
        obj = -(log_prior.exp()[None, :] * logp).sum(1)
    elif kind == "preserve":
        obj = torch.relu(ref - log_odds(logits, y))
    else:  # log-odds rather than log p_y: the gradient does not vanish when the classifier is sure
        obj = torch.relu(log_odds(logits, y) - ref)
    out = obj.mean() if scale is None else obj.sum() * scale
    # the sparsity penalty ramps up over the first quarter of training: the mask first learns to
    # remove, then to spend no more than it needs (at full strength from the start it can stall at
    # spending nothing, e.g. with a backbone that cannot tell the class bump from the distractor)
    lam = settings["sparsity"] * min(1.0, 4.0 * progress)
    if lam > 0:
        spent = delta.reshape(len(delta), -1).sum(1) / tau.reshape(-1)
        out = out + lam * (spent.mean() if scale is None else spent.sum() * scale)
    return out


def mask_logits(net: MaskNet, x: torch.Tensor) -> torch.Tensor:
    """Mask logits z = BN(g(x)) ``(N, M, *spatial)`` in evaluation mode (no batch dependence)."""
    was = net.training
    net.eval()
    try:
        with torch.inference_mode():
            outs = [net.logits(x[s]) for s in chunks(len(x), x[0].numel())]
    finally:
        net.train(was)
    return torch.cat(outs)


class Stopper:
    """Early stopping with the best weights and a plateau learning-rate schedule, on a validation loss.

    After every epoch the loss is measured on the validation data (the calibration split: never the
    held-out one) at 4 fixed τ across the trained range, in evaluation mode. An epoch that does not
    lower it by 1e-4 (relative) counts as bad; with ``lr_schedule='plateau'`` the learning rate is
    halved after every 2 bad epochs in a row; with ``early_stopping=p`` training stops after ``p`` bad
    epochs in a row, and the weights of the best epoch are restored at the end either way."""

    def __init__(self, patience: int | None, plateau: bool) -> None:
        self.patience, self.plateau = patience, plateau
        self.best, self.bad, self.lr_scale, self.best_epoch, self.stopped = math.inf, 0, 1.0, -1, False
        self.best_state: dict | None = None

    def state(self) -> dict:
        return {"best": None if not math.isfinite(self.best) else self.best, "bad": self.bad,
                "lr_scale": self.lr_scale, "best_epoch": self.best_epoch, "stopped": self.stopped}

    def load(self, st: dict, best_state: dict | None) -> None:
        self.best = math.inf if st.get("best") is None else float(st["best"])
        self.bad, self.lr_scale = int(st["bad"]), float(st["lr_scale"])
        self.best_epoch, self.stopped = int(st["best_epoch"]), bool(st["stopped"])
        self.best_state = best_state

    def update(self, epoch: int, value: float, net: nn.Module) -> None:
        improved = (not math.isfinite(self.best)) or value < self.best - 1e-4 * abs(self.best)
        if improved:
            self.best, self.bad, self.best_epoch = value, 0, epoch
            self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            self.bad += 1
            if self.plateau and self.bad % 2 == 0:
                self.lr_scale = max(self.lr_scale / 2, 1 / 64)
        if self.patience is not None and self.bad >= self.patience:
            self.stopped = True


def validation_loss(loc, model: Model, net: MaskNet, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None,
                    tau_lo: float, tau_hi: float) -> float:
    """The training loss on validation data at 4 fixed τ (geometric over the range), evaluation mode,
    without the sparsity ramp's progress (full penalty); same value on every rank."""
    settings = loc.settings_
    taus = np.unique(np.geomspace(tau_lo, tau_hi, 4))
    total = 0.0
    was = net.training
    net.eval()
    try:
        with model.frozen(), torch.inference_mode():
            for s in chunks(len(x), x[0].numel()):
                xb, yb = x[s], y[s]
                z = net.logits(xb)
                base = baseline(xb, settings["baseline"], loc.base_stats_,
                                torch.Generator(device="cpu").manual_seed(mix(loc.seed, 55)))
                for tau in taus:
                    tb = torch.full((len(xb),), float(tau), dtype=xb.dtype, device=xb.device)
                    delta = net.masks(z, tb)
                    xm = compose(xb, delta, base, settings["objective"])
                    out = loss(settings, loc.log_prior_, model.logits_t(xm), yb, delta, tb,
                               None if ref is None else ref[s], 1.0)
                    total += float(out) * len(xb)
    finally:
        net.train(was)
    return total / (len(x) * len(taus))


def train(loc, ctx, model: Model, net: MaskNet, x: torch.Tensor, y: torch.Tensor, tau_lo: float, tau_hi: float,
          stage: int, state: dict | None, fp: str, extra: dict, callback, bar,
          val: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Train ``net`` for ``loc.epochs`` epochs, τ drawn log-uniform in ``[tau_lo, tau_hi]`` per sample
    (resuming from ``state`` when it is this stage's checkpoint). ``val``: validation data for early
    stopping / the plateau schedule (:class:`Stopper`), when either is on."""
    from .checkpoint import save_checkpoint

    # the few head parameters (BatchNorm scale/shift = the softmax's temperature, the sink) learn faster
    head = [p for n, p in net.named_parameters() if n.startswith(("bn.", "sink"))]
    body = [p for n, p in net.named_parameters() if not n.startswith(("bn.", "sink"))]
    head_mult = HEAD_LR_MULT if loc.mode == "trust" else 1.0  # the paper trains every weight alike
    opt = torch.optim.Adam([{"params": body, "lr_mult": 1.0}, {"params": head, "lr_mult": head_mult}],
                           lr=float(loc.lr), weight_decay=float(loc.weight_decay))
    watch = val is not None and (loc.early_stopping is not None or loc.lr_schedule == "plateau")
    stopper = Stopper(loc.early_stopping, loc.lr_schedule == "plateau") if watch else None
    start = 0
    if state is not None and state.get("stage") == stage:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        start = int(state["epoch"]) + 1
        loc.history_ = list(state.get("history", []))
        if stopper is not None and state.get("stopper"):
            stopper.load(state["stopper"], state.get("best"))
    n, bs = len(x), int(loc.batch_size)
    steps_per_epoch = max(1, math.ceil(n / bs))
    total = steps_per_epoch * int(loc.epochs)
    ref = reference(loc, model, x, y)
    val_ref = reference(loc, model, val[0], val[1]) if stopper is not None else None
    settings = loc.settings_
    objective = settings["objective"]
    lr0 = float(loc.lr)
    log_lo, log_hi = math.log(tau_lo), math.log(tau_hi)
    noisy = settings["baseline"] == "noise"
    with ctx.patched(net):
        fwd = ctx.wrap(net)  # DDP over this rank's shard of every global batch (one process: net itself)
        for epoch in range(start, int(loc.epochs)):
            if stopper is not None and stopper.stopped:
                break
            net.train()
            gen = torch.Generator(device="cpu").manual_seed(mix(loc.seed, stage, epoch))
            order = torch.randperm(n, generator=gen)
            taus = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, generator=gen, dtype=torch.float64))
            noise_gen = torch.Generator(device="cpu").manual_seed(mix(loc.seed, stage, epoch, 77))
            total_loss = 0.0
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(mix(loc.seed, stage, epoch, 3))
                for i in range(steps_per_epoch):
                    step = epoch * steps_per_epoch + i
                    for g in opt.param_groups:
                        g["lr"] = g["lr_mult"] * lr0 * (stopper.lr_scale if stopper is not None and stopper.plateau
                                                        else 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total)))
                    idx = order[i * bs:(i + 1) * bs]
                    if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples
                        continue
                    m = len(idx)
                    a, b, rows, scale = ctx.batch_share(m)  # this rank's share (the same order on every rank)
                    idx = idx[a:b]
                    dev_idx = idx.to(x.device)
                    xb, yb = x[dev_idx], y[dev_idx]
                    tb = taus[idx].to(dtype=x.dtype, device=x.device)
                    delta = fwd(xb, tb)
                    base = baseline(xb, settings["baseline"], loc.base_stats_, noise_gen if noisy else None, rows)
                    xm = compose(xb, delta, base, objective)
                    out = loss(settings, loc.log_prior_, model.logits_t(xm), yb, delta, tb,
                               None if ref is None else ref[dev_idx], step / total, scale)
                    if not torch.isfinite(out):
                        from ..errors import DataError

                        raise DataError("the training loss is not finite (the classifier's logits on the masked "
                                        "inputs are NaN or infinite)", parameter="model",
                                        expected="finite logits for the inputs and their masked versions",
                                        got=f"loss {float(out.detach())}",
                                        fix="check the model's weights and the inputs' scale (standardize X)")
                    opt.zero_grad(set_to_none=True)
                    out.backward()
                    opt.step()
                    total_loss += float(out.detach()) * (m if scale is None else m / ctx.world)
            seconds = time.perf_counter() - t0
            total_loss = float(ctx.sum_np(np.array([total_loss]))[0])  # the global batch's loss
            seconds = ctx.max_float(seconds)  # the slowest rank's time
            logs = {"stage": stage, "epoch": epoch, "loss": total_loss / n, "seconds": seconds,
                    **{k: v for k, v in extra.items() if k != "sweep"}}
            if stopper is not None:
                v = validation_loss(loc, model, net, val[0], val[1], val_ref, tau_lo, tau_hi)
                stopper.update(epoch, v, net)
                logs.update({"val_loss": v, "lr": float(opt.param_groups[0]["lr"]), "best_epoch": stopper.best_epoch})
            loc.history_.append(logs)
            if loc.checkpoint is not None and ctx.is_main:
                save_checkpoint(loc, fp, stage, epoch, net, opt, extra, stopper)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", **({"tau": f"{extra['tau']:.3g}"} if "tau" in extra else {}))
            if callback is not None:
                callback(epoch, dict(logs))
        if stopper is not None and stopper.best_state is not None:
            net.load_state_dict(stopper.best_state)  # the best epoch's weights
            loc.best_epoch_ = stopper.best_epoch
        ctx.broadcast_module(net)  # data-parallel: the ranks agree already; this makes sure of it
    net.eval()


def masked_risks(loc, ctx, model: Model, x: torch.Tensor, y: torch.Tensor, taus, metric: str | None = None
                 ) -> np.ndarray:
    """Per-sample risks on the composed inputs (region removed, or kept for 'preserve') for every τ:
    ``(T, N)``. Each rank computes the mask logits and risks of its share of every chunk (the noise
    baseline drawn for the whole chunk, as one process does) and the shares are summed, so every
    rank gets the whole table (one process: its share is the whole chunk)."""
    metric = metric or loc.r_metric_
    settings = loc.settings_
    out = np.zeros((len(taus), len(x)))
    net = loc.net_
    dev, dtype = next(net.parameters()).device, next(net.parameters()).dtype
    parts = chunks(len(x), x[0].numel())
    shares = [(s.stop - s.start, *ctx.shard(s.stop - s.start)) for s in parts]
    subs = [slice(s.start + a, s.start + b) for s, (_, a, b) in zip(parts, shares)]
    zs = [mask_logits(net, x[sub].to(device=dev, dtype=dtype)) if sub.stop > sub.start else None for sub in subs]
    whole = ctx.world == 1
    with model.frozen(), torch.inference_mode():
        for j, tau in enumerate(taus):
            gen = torch.Generator(device="cpu").manual_seed(mix(loc.seed, 99))
            for sub, (m, a, b), zz in zip(subs, shares, zs):
                if a == b:
                    if settings["baseline"] == "noise":  # keep the noise stream in step
                        baseline(x[sub.start:sub.start + 1], "noise", loc.base_stats_, gen, (m, 0, 0))
                    continue
                xs = x[sub]
                delta = net.masks(zz, float(tau))
                base = baseline(xs, settings["baseline"], loc.base_stats_, gen, None if whole else (m, a, b))
                xm = compose(xs, delta.to(xs.dtype), base, settings["objective"])
                out[j, sub] = _r2.per_sample_risk(model.logits_t(xm), y[sub], metric).cpu().numpy()
    return ctx.sum_np(out)


@contextlib.contextmanager
def progress_bar(loc, ctx, total: int):
    if not loc.progress or not ctx.is_main:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="localizer", unit="epoch", leave=False) as bar:
        yield bar






def baseline_risks(loc, model: Model, x: torch.Tensor, y: torch.Tensor, metric: str | None = None) -> np.ndarray:
    """Per-sample risks on the baseline alone (nothing kept), ``(N,)``: the denominator of the
    'preserve' R². Computed whole on every rank (one forward pass; seeded noise)."""
    metric = metric or loc.r_metric_
    kind = loc.settings_["baseline"]
    gen = torch.Generator(device="cpu").manual_seed(mix(loc.seed, 98))
    out = []
    with model.frozen(), torch.inference_mode():
        for s in chunks(len(x), x[0].numel()):
            b = baseline(x[s], kind, loc.base_stats_, gen, explicit_zero=True)
            out.append(_r2.per_sample_risk(model.logits_t(b), y[s], metric))
    return torch.cat(out).cpu().numpy()
