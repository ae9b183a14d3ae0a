"""Synthetic tasks: the mask is where the class information is, and nowhere else."""

import numpy as np
import pytest

from trustmap.datasets import make_synthetic
from trustmap.errors import InputError, LayoutError


def _region_slices(ds):
    """class -> tuple of slices (spatial) of its region, from the metadata."""
    w = ds.meta["params"]["width"]
    return {r["class"]: tuple(slice(s, s + w) for s in r["start"]) for r in ds.meta["regions"]}


def _region_means(ds, channel=0):
    """(N, n_regions) mean of each sample over each class's region on ``channel``."""
    Xi = ds.internal()[:, channel]
    regions = _region_slices(ds)
    return np.stack([Xi[(slice(None),) + regions[k]].reshape(len(ds), -1).mean(1) for k in sorted(regions)], 1)


def _nearest_mean_accuracy(feature, y):
    """Fit class means of the features on half the data, classify the other half by the nearest mean."""
    f = feature.reshape(len(y), -1)
    half = len(y) // 2
    means = np.stack([f[:half][y[:half] == k].mean(0) for k in range(y.max() + 1)])
    pred = ((f[half:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y[half:]).mean())


def test_mask_marks_exactly_the_true_class_region():
    ds = make_synthetic(300, size=96, n_classes=3, seed=0)
    assert ds.layout == "NL" and ds.X.shape == ds.mask.shape == (300, 96)
    regions = _region_slices(ds)
    for i in range(len(ds)):
        expected = np.zeros(96, bool)
        expected[regions[ds.y[i]]] = True
        np.testing.assert_array_equal(ds.mask[i], expected)
    assert ds.mask.sum(1).tolist() == [ds.meta["params"]["width"]] * 300
    # the distractor is present in every sample but never in the mask
    dmask = ds.per_sample["distractor_mask"]
    assert dmask.all(0).sum() == ds.meta["params"]["width"] and not (dmask & ds.mask).any()


def test_signal_differs_between_classes_inside_the_mask_only():
    ds = make_synthetic(3000, size=128, n_classes=3, noise=0.2, seed=1)
    X, y = ds
    means = np.stack([X[y == k].mean(0) for k in range(3)])
    sem = X.std(0).max() / np.sqrt(1000)
    spread = means.max(0) - means.min(0)
    in_any = ds.mask.any(0)
    assert spread[in_any].max() > 0.9  # amplitude ~1 shapes
    assert spread[~in_any].max() < 6 * sem  # includes the distractor: identical in all classes
    dist = ds.per_sample["distractor_mask"][0]
    assert (means[:, dist].mean(1) > 0.3).all()  # the distractor is there, in every class
    # a region-mean classifier: perfect on the class regions, chance on the distractor
    assert _nearest_mean_accuracy(_region_means(ds), y) > 0.95  # noise 0.2 vs bumps of ~0.5 mean
    d_feature = X[:, dist].mean(1)
    assert abs(_nearest_mean_accuracy(d_feature, y) - 1 / 3) < 0.05


def test_smooth_noise_has_the_documented_statistics():
    # pure background: std = noise, Gaussian autocorrelation exp(-lag^2 / (4 s^2)) with s = size/40
    ds = make_synthetic(2000, size=160, n_classes=2, null_class=True, distractor=False, amplitude=0.0,
                        noise=0.3, baseline=1.5, seed=2)
    X = ds.X.astype(np.float64)
    assert abs(X.mean() - 1.5) < 0.01 and abs(X.std() - 0.3) < 0.01
    s = 160 / 40
    Z = X - 1.5
    for lag in (1, 4, 8):
        rho = (Z[:, :-lag] * Z[:, lag:]).mean() / Z.var()
        assert rho == pytest.approx(np.exp(-lag**2 / (4 * s**2)), abs=0.02)


def test_label_noise_rate_and_true_region():
    ds = make_synthetic(1000, n_classes=4, label_noise=0.1, seed=3)
    flipped, y_true = ds.per_sample["flipped"], ds.per_sample["y_true"]
    assert flipped.sum() == 100 == ds.meta["n_flipped"]
    assert (ds.y[flipped] != y_true[flipped]).all() and (ds.y[~flipped] == y_true[~flipped]).all()
    assert np.bincount(y_true).tolist() == [250] * 4
    regions = _region_slices(ds)
    for i in np.flatnonzero(flipped)[:20]:  # the mask follows the TRUE class
        assert ds.mask[i][regions[y_true[i]]].all()
        assert not ds.mask[i][regions[ds.y[i]]].any()


def test_null_class_binary_task():
    ds = make_synthetic(400, size=187, n_classes=2, null_class=True, distractor=30, positions=[100], width=15,
                        baseline=0.3, seed=4)
    assert ds.classes == ["none", "bump@100"]
    assert not ds.mask[ds.y == 0].any() and (ds.mask[ds.y == 1].sum(1) == 15).all()
    assert np.flatnonzero(ds.mask[ds.y == 1][0]).tolist() == list(range(93, 108))
    assert np.flatnonzero(ds.per_sample["distractor_mask"][0]).tolist() == list(range(23, 38))
    feature = ds.X[:, 93:108].mean(1)
    assert _nearest_mean_accuracy(feature, ds.y) > 0.95
    assert abs(_nearest_mean_accuracy(ds.X[:, 23:38].mean(1), ds.y) - 0.5) < 0.1


def test_twelve_channels_only_the_informative_one_carries_the_class():
    ds = make_synthetic(600, size=100, channels=12, informative_channels=(4,), n_classes=3, seed=5)
    assert ds.layout == "NCL" and ds.X.shape == (600, 12, 100)
    assert ds.mask[:, 4].any() and not np.delete(ds.mask, 4, axis=1).any()
    assert (_region_means(ds, channel=4).argmax(1) == ds.y).mean() > 0.99
    for c in (0, 7, 11):  # other channels: the region means carry nothing
        assert _nearest_mean_accuracy(_region_means(ds, channel=c)[:, 0], ds.y) < 0.45
    assert ds.per_sample["distractor_mask"][:, :, :].any(2).all()  # distractor on every channel
    nlc = make_synthetic(600, size=100, channels=12, informative_channels=(4,), n_classes=3, seed=5, layout="NLC")
    np.testing.assert_array_equal(nlc.X, ds.X.transpose(0, 2, 1))
    np.testing.assert_array_equal(nlc.mask, ds.mask.transpose(0, 2, 1))


def test_2d_task():
    ds = make_synthetic(600, rank=2, size=(24, 28), n_classes=3, seed=6)
    assert ds.layout == "NHW" and ds.X.shape == ds.mask.shape == (600, 24, 28)
    regions = _region_slices(ds)
    for i in range(20):  # the mask lies inside the class's box and is not empty
        box = np.zeros((24, 28), bool)
        box[regions[ds.y[i]]] = True
        assert ds.mask[i].any() and not (ds.mask[i] & ~box).any()
    assert (_region_means(ds).argmax(1) == ds.y).mean() > 0.99
    dist = ds.per_sample["distractor_mask"][0]
    assert abs(_nearest_mean_accuracy(ds.X[:, dist].mean(1), ds.y) - 1 / 3) < 0.07
    multi = make_synthetic(50, rank=2, size=16, channels=3, informative_channels=(1,), n_classes=2, seed=6)
    assert multi.layout == "NCHW" and multi.mask[:, 1].any() and not multi.mask[:, [0, 2]].any()
    hwc = make_synthetic(50, rank=2, size=16, channels=3, informative_channels=(1,), n_classes=2, seed=6,
                         layout="NHWC")
    np.testing.assert_array_equal(hwc.X, np.moveaxis(multi.X, 1, -1))
    assert [r["shape"] for r in ds.meta["regions"]] == ["blob", "square", "pyramid"]


def test_jitter_moves_the_mask_with_the_shape():
    ds = make_synthetic(200, size=128, n_classes=2, jitter=5, distractor=False, noise=0.0, seed=7)
    shift = ds.per_sample["shift"][:, 0]
    assert shift.min() == -5 and shift.max() == 5
    starts = {r["class"]: r["start"][0] for r in ds.meta["regions"]}
    for i in range(len(ds)):
        on = np.flatnonzero(ds.mask[i])
        assert on[0] == starts[ds.y[i]] + shift[i]
        assert np.flatnonzero(np.abs(ds.X[i]) > 1e-6).min() >= on[0]  # noise-free: signal only in the mask
        assert np.flatnonzero(np.abs(ds.X[i]) > 1e-6).max() <= on[-1]


def test_determinism_and_seed():
    a, b = make_synthetic(50, seed=9), make_synthetic(50, seed=9)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(make_synthetic(50, seed=10).X, a.X)
    assert a.X.dtype == np.float32 and a.y.dtype == np.int64 and a.mask.dtype == bool


@pytest.mark.parametrize("kwargs, parameter", [
    (dict(n_classes=1), "n_classes"),
    (dict(positions=[5, 60, 200]), "positions"),
    (dict(positions=[60, 90]), "positions"),
    (dict(positions=[19, 60, 90]), "positions"),  # overlaps the distractor at 19
    (dict(channels=3, informative_channels=(3,)), "informative_channels"),
    (dict(label_noise=1.0), "label_noise"),
    (dict(rank=3), "rank"),
    (dict(n=0), "n"),
    (dict(size=(10, 10)), "size"),
    (dict(distractor=127), "distractor"),
])
def test_bad_arguments_name_the_parameter(kwargs, parameter):
    kwargs = {"n": 10, **kwargs}
    with pytest.raises(InputError) as err:
        make_synthetic(**kwargs)
    assert err.value.parameter == parameter


def test_layout_must_fit_channels_and_rank():
    with pytest.raises(LayoutError) as err:
        make_synthetic(10, channels=3, layout="NL")
    assert err.value.parameter == "layout"
    with pytest.raises(LayoutError):
        make_synthetic(10, layout="NCHW")
