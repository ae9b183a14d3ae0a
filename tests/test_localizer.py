"""TRUST localizer: the mask, R² and its interval, the estimator contract, persistence, resume, errors."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_same_state, model_state
from trustmap import Attribution, Localizer
from trustmap.errors import InputError, NotFittedError, RunDirError, ShapeError, TargetError, TrustmapError
from trustmap.localizer import R2Estimate
from trustmap.localizer import r2 as R
from trustmap.localizer.model import MaskNet, UNetBackbone, apply_mask, blur, masks_from_probs
from trustmap.localizer.tasks import distractor_task, multichannel_task


def tiny_cnn(c: int, length: int, k: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(c, 8, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(8, 16, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(16 * (length // 4), k))


def train(net: nn.Module, X: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    x, t = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def binary():
    task = distractor_task(1200, seed=11, length=96, bump_at=60, distractor_at=20)
    net = train(tiny_cnn(1, 96, 2), task.X, task.y, epochs=6, seed=11)
    return task, net


FAST = dict(epochs=5, n_boot=300, batch_size=64)


@pytest.fixture(scope="module")
def fitted(binary):
    task, net = binary
    return Localizer(seed=0, **FAST).fit(net, task.X[:, 0], task.y)


# ---- the mask ---------------------------------------------------------------------------------
def test_mask_formula_budget_and_nesting():
    torch.manual_seed(0)
    z = torch.randn(4, 3, 10) * 3
    for budget, groups in (("total", 1), ("per_channel", 3)):
        net = MaskNet(nn.Identity(), 1, 3, budget=budget, sink=False).eval()
        p = net.probs(net.logits(z))
        # independent computation: numpy softmax over each group, then tanh(relu(tau * p))
        zz = net.bn(z).detach().numpy().reshape(4, groups, -1)
        ref = np.exp(zz - zz.max(-1, keepdims=True))
        ref = (ref / ref.sum(-1, keepdims=True)).reshape(4, 3, 10)
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-5, atol=1e-7)
        for tau in (0.5, 3.0, 40.0):
            d = net(z, tau).detach().numpy()
            np.testing.assert_allclose(d, np.tanh(tau * ref), rtol=1e-5, atol=1e-7)
            assert d.min() >= 0 and d.max() <= 1  # < 1 in exact arithmetic; tanh rounds to 1 in float32
            sums = d.reshape(4, groups, -1).sum(-1)
            assert np.all(sums <= tau + 1e-5)
        d_small, d_big = masks_from_probs(p, 2.0), masks_from_probs(p, 9.0)
        assert torch.all(d_small <= d_big)  # nested path


def test_sink_lets_the_mask_spend_less():
    net = MaskNet(nn.Identity(), 1, 1, sink=True).eval()
    with torch.no_grad():
        net.sink.fill_(8.0)
    p = net.probs(net.logits(torch.zeros(2, 1, 50))).detach()
    # a flat map (logits 0) against a sink logit of 8: the entries keep 50 / (50 + e^8) of the budget
    np.testing.assert_allclose(p.sum(dim=(1, 2)).numpy(), 50 / (50 + math.exp(8.0)), rtol=1e-5)
    net_no = MaskNet(nn.Identity(), 1, 1, sink=False).eval()
    np.testing.assert_allclose(net_no.probs(torch.zeros(2, 1, 50)).sum(dim=(1, 2)).detach().numpy(), 1.0, rtol=1e-6)
    # the sink starts at log(entries): a flat map spends half of tau
    fresh = MaskNet(nn.Identity(), 1, 1, sink=True, entries=50).eval()
    np.testing.assert_allclose(fresh.probs(torch.zeros(1, 1, 50)).sum().item(), 0.5, rtol=1e-5)


def test_apply_mask_and_blur():
    x = torch.rand(2, 3, 20)
    d = torch.rand(2, 3, 20) * 0.9
    b = torch.full_like(x, 0.25)
    np.testing.assert_allclose(apply_mask(x, d, None).numpy(), (x * (1 - d)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(apply_mask(x, d, b).numpy(), (x * (1 - d) + d * b).numpy(), rtol=1e-5, atol=1e-6)
    const = torch.full((1, 2, 7, 9), 0.7)
    np.testing.assert_allclose(blur(const, 2.0).numpy(), 0.7, rtol=1e-5)  # blur keeps constants
    impulse = torch.zeros(1, 1, 41)
    impulse[0, 0, 20] = 1.0
    out = blur(impulse, 3.0)[0, 0].numpy()
    assert abs(out.sum() - 1.0) < 1e-5 and out.argmax() == 20 and out[20] < 0.2


def test_unet_backbone_any_rank_and_odd_sizes():
    for shape in ((2, 3, 187), (2, 1, 13, 17)):
        net = UNetBackbone(len(shape) - 2, shape[1], shape[1])
        assert net(torch.randn(*shape)).shape == shape


# ---- R² ---------------------------------------------------------------------------------------
def test_r2_point_and_delta_vs_bootstrap():
    rng = np.random.default_rng(0)
    n = 4000
    clean = (rng.random(n) < 0.05).astype(float)
    masked = np.where(clean == 1, 1.0, (rng.random(n) < 0.4).astype(float))
    b = R.r2_summary(clean, masked, level=0.9, n_boot=2000, seed=1)
    d = R.r2_summary(clean, masked, level=0.9, method="delta")
    want = 1 - clean.mean() / masked.mean()
    assert b["estimate"][0] == pytest.approx(want) and d["estimate"][0] == pytest.approx(want)
    assert b["low"][0] < want < b["high"][0]
    # the delta method and the bootstrap agree on the width for a large sample
    assert (d["high"][0] - d["low"][0]) == pytest.approx(b["high"][0] - b["low"][0], rel=0.15)


def test_bootstrap_means_are_paired_and_chunk_independent():
    rng = np.random.default_rng(1)
    rows = rng.random((3, 500))
    rows[2] = rows[0]  # a duplicated row gets the same replicates (pairing)
    a = R.boot_means(rows, 300, seed=7)
    b = R.boot_means(rows, 300, seed=7, chunk_bytes=8 * 500 * 7)  # 7 replicates per chunk
    np.testing.assert_allclose(a, b, rtol=1e-12)  # same replicates (up to matmul rounding)
    np.testing.assert_allclose(a[0], a[2], rtol=1e-13)  # the same replicates; BLAS may round rows apart
    assert a.shape == (3, 300)
    # bootstrap standard error of a mean ~ sd / sqrt(n)
    assert a[1].std() == pytest.approx(rows[1].std() / np.sqrt(500), rel=0.15)


def test_chance_risk_is_the_exact_permutation_expectation():
    rng = np.random.default_rng(3)
    y = np.array([0, 0, 1, 2, 1, 0])
    logits = rng.normal(size=(6, 3))
    vals = []
    for perm in itertools.permutations(range(6)):
        yp = y[list(perm)]
        vals.append(float(R.per_sample_risk(torch.from_numpy(logits), torch.from_numpy(yp), "acc").mean()))
    assert R.chance_risk(y, logits, "acc", 3) == pytest.approx(np.mean(vals), rel=1e-10)
    # loss: the cross-entropy of the best input-blind prediction, the label frequencies (3/6, 2/6, 1/6)
    prior = np.log(np.array([[3, 2, 1]]) / 6.0).repeat(6, 0)
    blind = float(R.per_sample_risk(torch.from_numpy(prior), torch.from_numpy(y), "loss").mean())
    assert R.chance_risk(y, logits, "loss", 3) == pytest.approx(blind, rel=1e-12)
    for other in (rng.normal(size=(6, 3)) for _ in range(5)):  # and no input-blind prediction does better
        p = np.log(np.exp(other[:1]) / np.exp(other[:1]).sum()).repeat(6, 0)
        assert float(R.per_sample_risk(torch.from_numpy(p), torch.from_numpy(y), "loss").mean()) >= blind


def test_isotonic():
    np.testing.assert_allclose(R.isotonic([0.1, 0.3, 0.2, 0.5, 0.4, 0.4]), [0.1, 0.25, 0.25, 0.433333, 0.433333,
                                                                               0.433333], rtol=1e-5)
    v = np.array([0.0, 0.2, 0.9])
    np.testing.assert_allclose(R.isotonic(v), v)


# ---- the estimator ---------------------------------------------------------------------------
def test_not_fitted():
    loc = Localizer()
    with pytest.raises(NotFittedError):
        loc.locate(np.zeros((2, 50)))
    with pytest.raises(NotFittedError):
        loc.save("unused")


@pytest.mark.parametrize("target", [0, 0.0, 1.2, -0.5, "high", float("nan")])
def test_bad_target(target):
    with pytest.raises(InputError) as e:
        Localizer(target_r2=target)
    assert e.value.parameter == "target_r2"


@pytest.mark.parametrize("tau", [0, -1.0, [2.0, 0.0], [], "big", float("inf")])
def test_bad_tau(tau):
    with pytest.raises(InputError) as e:
        Localizer(tau=tau)
    assert e.value.parameter == "tau"


def test_bad_options():
    for kw in ({"objective": "flip"}, {"baseline": "one"}, {"r_metric": "auc"}, {"mode": "fast"},
               {"confidence": 1.0}, {"epochs": 0}, {"calibration": 0.5, "holdout": 0.45}):
        with pytest.raises(InputError):
            Localizer(**kw)
    assert Localizer(target_r2=1.0).target_r2 == 1.0  # the closed end of (0, 1]


def test_chance_classifier_is_refused(binary):
    task, _ = binary
    net = tiny_cnn(1, 96, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    with pytest.raises(InputError, match="no better than chance"):
        Localizer(**FAST).fit(net, task.X, task.y)


def test_labels_must_match_the_classes(binary):
    task, net = binary
    y = task.y.copy()
    y[0] = 2
    with pytest.raises(TargetError):
        Localizer(**FAST).fit(net, task.X, y)
    with pytest.raises(TargetError):
        Localizer(**FAST).fit(net, task.X, np.eye(3)[task.y])
    with pytest.raises(ShapeError):
        Localizer(**FAST).fit(net, task.X, task.y[:-3])
    with pytest.raises(TargetError):
        Localizer(**FAST).fit(net, task.X, task.y + 0.5)


def test_fit_contract(fitted, binary):
    task, net = binary
    loc = fitted
    grid = loc.tau_grid_
    assert len(grid) >= 8 and np.all(np.diff(grid) > 0)
    assert loc.tau_ in grid
    assert isinstance(loc.r2_, R2Estimate)
    assert loc.r2_.low <= loc.r2_.estimate <= loc.r2_.high and loc.r2_ci_ == (loc.r2_.low, loc.r2_.high)
    assert loc.r2_.n == loc.split_["holdout"] and loc.split_["calibration"] > 100
    # the reported path is monotone in tau, its band contains it
    for path in (loc.r2_path_, loc.calibration_path_):
        assert np.all(np.diff(path.estimate) >= -1e-12)
        assert np.all(path.low <= path.estimate + 1e-12) and np.all(path.estimate <= path.high + 1e-12)
    # 'auto' target: the chance level of this classifier on the calibration split, 1 - err / (1 - sum pi q)
    assert 0.5 < loc.target_r2_ < 1
    # tau_ is the smallest tau on the calibration path where the target can no longer be told apart
    gap_high = R.isotonic(np.asarray(loc.target_gap_["high"]))
    if loc.target_reached_:
        assert gap_high[loc.tau_index_] >= 0 and np.all(gap_high[:loc.tau_index_] < 0)
    else:  # out of reach on this path: no tau got there (and fit warned)
        assert np.all(gap_high < 0)
    # the masked classifier really is worse: R² > 0 at tau_
    assert loc.r2_.estimate > 0.3


def test_float_target_uses_the_lower_bound(binary):
    task, net = binary
    loc = Localizer(target_r2=0.5, seed=0, **FAST).fit(net, task.X, task.y)
    low = loc.calibration_path_.low
    i = loc.tau_index_
    assert low[i] >= 0.5 and np.all(low[:i] < 0.5)


def test_locate_layouts_batch_invariance_and_targets(fitted, binary):
    task, net = binary
    X = task.X[:40, 0]  # (N, L)
    att = fitted.locate(X)
    assert isinstance(att, Attribution) and att.layout == "NL" and att.maps.shape == X.shape
    assert att.maps.min() >= 0 and att.maps.max() < 1
    assert np.all(att.maps.sum(1) <= fitted.tau_ + 1e-4)
    with torch.no_grad():
        pred = net(torch.from_numpy(task.X[:40])).argmax(1).numpy()
    np.testing.assert_array_equal(att.targets, pred)
    np.testing.assert_array_equal(fitted.locate(X, y=task.y[:40]).targets, task.y[:40])
    one_by_one = np.concatenate([fitted.locate(X[i:i + 1]).maps for i in range(5)])
    np.testing.assert_allclose(one_by_one, att.maps[:5], rtol=1e-5, atol=1e-7)  # no batch dependence
    ncl = fitted.locate(task.X[:40])
    assert ncl.layout == "NCL" and ncl.maps.shape == (40, 1, 96)
    np.testing.assert_allclose(ncl.maps[:, 0], att.maps, rtol=1e-6, atol=1e-7)
    # nested masks along the path
    small, big = fitted.masks(X, tau=fitted.tau_grid_[2]), fitted.masks(X, tau=fitted.tau_grid_[-1])
    assert np.all(small <= big + 1e-7)


def test_r2_method_matches_the_definition(fitted, binary):
    task, net = binary
    X, y = task.X[:600], task.y[:600]
    est = fitted.r2(X, y)
    assert fitted.r_metric_ == "prob" and est.metric == "prob"  # the default: 1 - p(label)
    with torch.no_grad():
        x, t = torch.from_numpy(X), torch.from_numpy(y)
        clean = (1 - net(x).double().softmax(1)[torch.arange(len(t)), t]).mean().item()
        d = torch.from_numpy(fitted.masks(X))
        xm = x * (1 - d) + d * fitted.base_stats_.train_mean  # baseline 'mean': the training data's per-channel mean
        masked = (1 - net(xm).double().softmax(1)[torch.arange(len(t)), t]).mean().item()
    assert est.estimate == pytest.approx(1 - clean / masked, rel=1e-6)
    assert est.low <= est.estimate <= est.high and est.n == 600 and est.tau == fitted.tau_
    # the training data's mean really is what 'mean' means
    np.testing.assert_allclose(float(fitted.base_stats_.train_mean.reshape(-1)[0]), task.X.mean(), atol=0.02)


def test_model_unchanged(binary):
    task, net = binary
    before = model_state(net)
    net.train()  # a model left in training mode stays in training mode
    before_train = model_state(net)
    Localizer(**FAST).fit(net, task.X, task.y)
    assert_same_state(before_train, model_state(net))
    net.eval()
    assert_same_state(before, model_state(net))


def test_save_load_identical_masks(fitted, binary, tmp_path):
    task, net = binary
    path = fitted.save(tmp_path / "loc")
    assert path.name == "localizer.safetensors" and path.with_suffix(".json").exists()
    loaded = Localizer.load(tmp_path / "loc")
    X = task.X[:50]
    np.testing.assert_array_equal(loaded.locate(X).maps, fitted.locate(X).maps)
    assert loaded.tau_ == fitted.tau_ and loaded.r2_ == fitted.r2_
    np.testing.assert_array_equal(loaded.r2_path_.estimate, fitted.r2_path_.estimate)
    assert np.all(loaded.locate(X).targets == -1)  # no model: targets unknown
    with pytest.raises(InputError):
        loaded.r2(X, task.y[:50])
    with_model = Localizer.load(tmp_path / "loc", model=net)
    assert with_model.r2(X, task.y[:50]).estimate == fitted.r2(X, task.y[:50]).estimate
    # a changed file is detected
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(RunDirError):
        Localizer.load(tmp_path / "loc")


def test_one_hot_labels_same_result(binary):
    task, net = binary
    a = Localizer(seed=3, **FAST).fit(net, task.X, task.y)
    b = Localizer(seed=3, **FAST).fit(net, task.X, np.eye(2)[task.y])
    assert a.tau_ == b.tau_
    np.testing.assert_array_equal(a.masks(task.X[:20]), b.masks(task.X[:20]))


class Stop(Exception):
    pass


def test_resume_gives_the_same_result(binary, tmp_path):
    task, net = binary
    kw = dict(seed=5, epochs=4, n_boot=300)
    straight = Localizer(**kw).fit(net, task.X, task.y)

    def stop_after_1(epoch, logs):
        if epoch == 1:
            raise Stop

    ck = tmp_path / "ck"
    with pytest.raises(Stop):
        Localizer(checkpoint=ck, **kw).fit(net, task.X, task.y, callback=stop_after_1)
    assert (ck / "checkpoint.json").exists() and len(list(ck.glob("checkpoint-*.safetensors"))) == 1
    seen = []
    resumed = Localizer(checkpoint=ck, **kw).fit(net, task.X, task.y, callback=lambda e, logs: seen.append(e))
    # epochs 0 and 1 were not trained again (then any extension of the 'auto' path: whole fits)
    assert seen == [2, 3] + [0, 1, 2, 3] * (len(straight.history_) // 4 - 1)
    assert resumed.tau_grid_extended_ == straight.tau_grid_extended_ and len(resumed.history_) == len(straight.history_)
    for (k1, v1), (k2, v2) in zip(straight.net_.state_dict().items(), resumed.net_.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert resumed.tau_ == straight.tau_ and resumed.r2_ == straight.r2_
    # a checkpoint of another fit is refused, not silently reused
    with pytest.raises(InputError):
        Localizer(checkpoint=ck, **{**kw, "seed": 6}).fit(net, task.X, task.y)


def test_paper_mode_sweeps_and_stops_at_the_first_tau(binary):
    task, net = binary
    loc = Localizer.paper(tau=[0.5, 2.0, 8.0, 30.0], epochs=2, n_boot=200).fit(net, task.X, task.y)
    assert loc.settings_ == {"objective": "paper", "baseline": "zero", "sink": False, "sparsity": 0.0,
                             "r_metric": "acc", "budget": "total"}
    path = loc.r2_path_
    assert path.split == "train" and path.n == len(task.X)  # the paper checks R² on the training data
    reached = np.flatnonzero(path.estimate >= loc.target_r2_)
    if loc.target_reached_:
        assert list(reached) == [len(path) - 1]  # stopped at the first tau reaching the target
    assert loc.tau_ == path.tau[-1]
    with pytest.raises(TrustmapError):
        loc.locate(task.X[:3], tau=0.5)  # one localizer per tau in paper mode
    m = loc.masks(task.X[:10])
    assert m.max() < 1 and np.all(m.reshape(10, -1).sum(1) <= loc.tau_ + 1e-4)


def test_keras_style_channels_last_input(tmp_path):
    task = multichannel_task(600, seed=2, channels=3, carrier=1, length=64, bump_at=40)
    net = train(tiny_cnn(3, 64, 2), task.X, task.y, epochs=5, seed=2)
    nlc = np.moveaxis(task.X, 1, -1)  # (N, L, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small splits warn about wide intervals
        loc = Localizer(epochs=2, n_boot=200, per_channel=False, layout="NLC").fit(net, nlc, task.y)
    att = loc.locate(nlc)
    assert att.layout == "NLC" and att.maps.shape == nlc.shape
    # a shared mask (per_channel=False) is the same on every channel
    np.testing.assert_allclose(att.maps[..., 0], att.maps[..., 2])


def test_plots(fitted, binary):
    pytest.importorskip("matplotlib")
    task, _ = binary
    fig = fitted.plot_r2_path()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.collections) >= 1  # the band
    fig = fitted.da_plot(task.X, task.y, n_per_class=2)
    assert len(fig.axes) == 4
    fig = fitted.path_plot(task.X, n=2)
    assert len(fig.axes) == 2 * 6


def test_plot_options_after_threshold_index_seconds(fitted, binary):
    pytest.importorskip("matplotlib")
    task, _ = binary
    X = task.X[:, 0]
    picked = [i for i in range(8) if task.y[i] == sorted(set(task.y[:8].tolist()))[0]][0]
    d = fitted.masks(X[picked:picked + 1])[0, 0]
    thr = float(d.max()) / 2
    fig = fitted.da_plot(X, task.y, n_per_class=2, index=[0, 1, 2, 3, 4, 5, 6, 7], fs=125.0, threshold=thr)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 2  # the signal and the signal after removing the located features
    # the 'after' trace is the localizer's own removal: x (1 - d) + d * mean, on the panel's scale
    after = X[picked] * (1 - d) + d * float(fitted.base_stats_.train_mean.reshape(-1)[0])
    lo, hi = min(X[picked].min(), after.min()), max(X[picked].max(), after.max())
    np.testing.assert_allclose(lines[1].get_ydata(), 0.32 + 0.63 * (after - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    # time axis in seconds; the mask band thresholded
    np.testing.assert_allclose(lines[0].get_xdata()[:3], [0, 1 / 125, 2 / 125])
    assert ax.get_xlabel() == "time (s)"
    band = ax.get_images()[0].get_array()
    assert np.all((band == 0) | (band >= thr)) and band.max() >= thr and (band == 0).any()
    # index picks the shown samples, in the given order per class
    assert ax.get_title() == f"class {task.y[picked]}, #{picked}"
    fig = fitted.path_plot(X, n=2, show_after=True, threshold=0.1)
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(InputError):
        fitted.da_plot(X, task.y, threshold=1.5)
    with pytest.raises(InputError):
        fitted.path_plot(X, fs=-1)
    # without labels: grouped by the classifier's predictions
    assert len(fitted.da_plot(X, n_per_class=1).axes) == 2


def test_run_locate_writes_the_run(binary, tmp_path):
    from trustmap.localizer import run_locate

    task, net = binary
    np.savez(tmp_path / "d.npz", X=task.X, y=task.y)
    out = run_locate(net, tmp_path / "d.npz", tmp_path / "run", epochs=2, n_boot=200, plots=False)
    for key in ("localizer", "masks", "r2_path"):
        assert (tmp_path / "run").joinpath(out[key]).exists()
    att = Attribution.load(out["masks"])
    assert att.maps.shape == task.X.shape and att.method == "trust"
    loc = Localizer.load(tmp_path / "run" / "localizer.safetensors")
    np.testing.assert_array_equal(loc.locate(task.X).maps, att.maps)
    import json

    rec = json.loads((tmp_path / "run" / "r2_path.json").read_text())
    assert rec["tau"] == out["tau"] and len(rec["r2_path"]["tau"]) == len(loc.tau_grid_)
    # rerun resumes from the finished checkpoint and gives the same answer
    again = run_locate(net, (task.X, task.y), tmp_path / "run", epochs=2, n_boot=200, plots=False, progress=True,
                       target_r2="auto", tau="auto")
    assert again["tau"] == out["tau"] and again["r2"] == out["r2"]


def test_command_line_strings():
    from trustmap.localizer.runner import parse_number as _parse_number, parse_taus as _parse_taus

    assert _parse_number("auto", "target_r2") == "auto" and _parse_number("0.8", "target_r2") == 0.8
    assert _parse_taus("2, 4,8") == [2.0, 4.0, 8.0] and _parse_taus("10") == 10.0 and _parse_taus("AUTO") == "auto"
    with pytest.raises(InputError):
        _parse_number("high", "target_r2")
    with pytest.raises(InputError):
        _parse_taus("2,x")


def test_keras_mask_network(binary, tmp_path):
    """A user's Keras network as g (dnn-locate lets users pass their own Keras localizer): trained as a
    clone (the user's weights unchanged), saved and loaded with a freshly built same architecture."""
    keras = pytest.importorskip("keras")

    def build():
        return keras.Sequential([keras.Input((None, 1)), keras.layers.Conv1D(8, 7, padding="same", activation="relu"),
                                 keras.layers.Conv1D(8, 7, padding="same", activation="relu"),
                                 keras.layers.Conv1D(1, 1)])

    task, net = binary
    user = build()
    before = [w.copy() for w in user.get_weights()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # an explicit path: this test is about the Keras backbone (the 'auto' path may be extended to
        # tau values where float32 tanh rounds the largest entries to 1)
        loc = Localizer(backbone=user, seed=0, tau=[1.0, 2.0, 4.0, 8.0], **FAST).fit(net, task.X, task.y)
    for a, b in zip(before, user.get_weights()):
        np.testing.assert_array_equal(a, b)
    trained = [p.detach().numpy() for n, p in loc.net_.backbone.named_parameters()]
    assert len(trained) == len(before) and any(not np.allclose(a, b) for a, b in zip(before, trained))  # trained
    m = loc.masks(task.X[:20])
    assert m.shape == task.X[:20].shape and np.all((m >= 0) & (m < 1))
    p = loc.save(tmp_path / "k")
    with pytest.raises(InputError, match="custom backbone"):
        Localizer.load(p)
    back = Localizer.load(p, backbone=build())
    np.testing.assert_allclose(back.masks(task.X[:20]), m, rtol=1e-6, atol=1e-7)
