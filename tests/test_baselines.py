"""The one baseline specification, the one Gaussian blur and the one label validator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.baselines import BASELINES, check_baseline, gaussian_blur, resolve_baseline
from trustmap.errors import InputError, LabelError, ShapeError
from trustmap.labels import check_labels
from trustmap.layout import Layout

RNG = np.random.default_rng(0)


def _t(n=3, c=2, *sp):
    return torch.as_tensor(RNG.normal(size=(n, c, *(sp or (10,)))), dtype=torch.float64)


# ---- the specification -------------------------------------------------------------------------
def test_names_have_one_meaning_each():
    t = _t(3, 2, 10)
    assert set(BASELINES) == {"zero", "mean", "dataset_mean", "blur", "noise"}
    assert torch.equal(resolve_baseline(t, "zero").expand_as(t), torch.zeros_like(t))
    # 'mean': each sample's own channel means, the same alone or in a batch
    m = resolve_baseline(t, "mean")
    np.testing.assert_allclose(m.expand_as(t).numpy(), np.broadcast_to(t.numpy().mean(2, keepdims=True), t.shape))
    assert torch.equal(resolve_baseline(t[1:2], "mean"), m[1:2])
    # 'dataset_mean': the channel means over the reference set (default: the batch)
    dm = resolve_baseline(t, "dataset_mean")
    np.testing.assert_allclose(dm.reshape(-1).numpy(), t.numpy().mean((0, 2)))
    ref = _t(7, 2, 10)
    np.testing.assert_allclose(resolve_baseline(t, "dataset_mean", reference=ref).reshape(-1).numpy(),
                               ref.numpy().mean((0, 2)))
    # 'noise' is drawn per sample: a sample gets the same noise alone and in a batch
    assert torch.allclose(resolve_baseline(t, "noise", seed=3)[2:3], resolve_baseline(t[2:3], "noise", seed=3))


@pytest.mark.parametrize("form", ["scalar", "per_channel", "internal_sample", "caller_sample", "batch", "tensor",
                                  "broadcast_positions", "one_per_sample_positions"])
def test_arrays_broadcast_as_captum_users_expect(form):
    t = _t(3, 2, 10)
    full = RNG.normal(size=(3, 2, 10))
    lay = Layout("NLC")
    cases = {
        "scalar": (0.5, np.full((3, 2, 10), 0.5)),
        "per_channel": (np.array([1.0, -1.0]), np.broadcast_to(np.array([1.0, -1.0])[None, :, None], (3, 2, 10))),
        "internal_sample": (full[0], np.broadcast_to(full[0], (3, 2, 10))),
        "caller_sample": (full[0].T, np.broadcast_to(full[0], (3, 2, 10))),  # (L, C): one sample in NLC
        "batch": (full, full),
        "tensor": (torch.as_tensor(full, dtype=torch.float32), full.astype(np.float32)),
        "broadcast_positions": (full[0, 0], np.broadcast_to(full[0, 0], (3, 2, 10))),  # (L,): every channel
        "one_per_sample_positions": (full[:, 0], np.broadcast_to(full[:, 0][:, None], (3, 2, 10))),
    }
    spec, want = cases[form]
    got = resolve_baseline(t, spec).expand_as(t).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    if form == "caller_sample":  # with the caller's layout known, its own broadcasting applies
        np.testing.assert_allclose(resolve_baseline(t, np.moveaxis(full, 1, -1), layout=lay).numpy(), full)


@pytest.mark.parametrize("bad,error,match", [
    (float("nan"), InputError, "finite"), (np.inf, InputError, "finite"), (np.float32("-inf"), InputError, "finite"),
    (True, InputError, "invalid"), (None, InputError, "invalid"), ("average", InputError, "unknown baseline"),
    (np.array([np.nan, 0.0]), InputError, "NaN or Inf"), (np.array(["a", "b"]), InputError, "invalid"),
    (np.zeros(0), ShapeError, "empty"),
])
def test_bad_baselines_are_refused_with_the_parameter_named(bad, error, match):
    with pytest.raises(error, match=match) as info:
        check_baseline(bad)
    assert info.value.parameter == "baseline"


def test_wrong_shape_names_the_accepted_shapes():
    with pytest.raises(ShapeError, match=r"\(2,\) per channel") as info:
        resolve_baseline(_t(3, 2, 10), np.zeros((3, 7)))
    assert info.value.parameter == "baseline"


def _linear_net(c=2, length=10, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * length, k)).double(), (c, length)


def test_integrated_gradients_takes_array_baselines_and_stays_complete():
    """IG with an array baseline (one sample, channels-last, a tensor, per channel) equals IG with
    the same values spelled out, and the maps sum to f(x) - f(baseline)."""
    net, shape = _linear_net()
    m = trustmap.load_model(net, input_shape=shape, dtype=torch.float64)
    x = RNG.normal(size=(4, *shape))
    b = RNG.normal(size=shape)
    a = trustmap.explain(m, x, method="integrated_gradients", baseline=b, target=1)
    # linear model: IG = w * (x - b) exactly
    w = net[1].weight.detach().numpy()[1].reshape(shape)
    np.testing.assert_allclose(a.maps, w * (x - b), atol=1e-9)
    assert np.abs(a.extras["delta"]).max() < 1e-9
    for same in (b.T, torch.as_tensor(b), np.broadcast_to(b, x.shape).copy()):
        np.testing.assert_allclose(trustmap.explain(m, x, method="integrated_gradients", baseline=same,
                                                    target=1).maps, a.maps, atol=1e-12)
    per_channel = trustmap.explain(m, x, method="integrated_gradients", baseline=np.array([0.5, -0.5]), target=1)
    np.testing.assert_allclose(per_channel.maps, w * (x - np.array([0.5, -0.5])[:, None]), atol=1e-9)


def test_occlusion_and_masking_share_the_mean():
    """'mean' is each sample's own channel means in occlusion and in the masking metrics alike."""
    from trustmap.metrics.faithfulness import drop_increase

    net, shape = _linear_net()
    m = trustmap.load_model(net, input_shape=shape, dtype=torch.float64)
    x = RNG.normal(size=(4, *shape))
    occ = trustmap.explain(m, x, method="occlusion", baseline="mean", window=1, per_channel=True, target=0)
    w = net[1].weight.detach().numpy()[0].reshape(shape)
    np.testing.assert_allclose(occ.maps, w * (x - x.mean(2, keepdims=True)), atol=1e-9)
    maps = RNG.normal(size=x.shape)
    whole = drop_increase(m, x, maps, frac=0.3, target=0, baseline="mean")[0].per_sample
    alone = [drop_increase(m, x[i:i + 1], maps[i:i + 1], frac=0.3, target=0, baseline="mean")[0].per_sample[0]
             for i in range(len(x))]
    np.testing.assert_allclose(whole, alone, rtol=1e-9)  # per sample: no dependence on the batch
    ds = drop_increase(m, x, maps, frac=0.3, target=0, baseline="dataset_mean")[0]
    np.testing.assert_allclose(ds.masking["baseline_values"], x.mean((0, 2)))


# ---- the one blur ------------------------------------------------------------------------------
def _reference_blur_1d(v: np.ndarray, sigma: float) -> np.ndarray:
    r = int(min(max(1, round(3 * sigma)), len(v) - 1))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(v, r, mode="reflect")
    return np.array([(p[i:i + 2 * r + 1] * k).sum() for i in range(len(v))])


@pytest.mark.parametrize("sigma", [0.7, 2.0, 9.0])
def test_gaussian_blur_is_a_normalized_reflected_gaussian(sigma):
    t = _t(2, 3, 12, 9)
    got = gaussian_blur(t, sigma).numpy()
    want = np.apply_along_axis(_reference_blur_1d, 2, t.numpy(), sigma)
    want = np.apply_along_axis(_reference_blur_1d, 3, want, sigma)
    np.testing.assert_allclose(got, want, atol=1e-12)
    # the localizer's blur and the explainers' blur are this one
    from trustmap.explain.base import spatial_blur
    from trustmap.localizer.model import blur

    assert torch.equal(blur(t, sigma), gaussian_blur(t, sigma))
    assert spatial_blur is gaussian_blur
    assert torch.allclose(gaussian_blur(torch.ones(1, 1, 7), sigma), torch.ones(1, 1, 7))  # mass kept


# ---- the one label validator ---------------------------------------------------------------------
def test_labels_are_class_indices_from_every_spelling():
    want = np.array([0, 2, 1])
    for y in (want, want.astype(float), want[:, None], np.eye(3)[want], torch.as_tensor(want), [0, 2, 1]):
        np.testing.assert_array_equal(check_labels(y, 3, 3), want)
    np.testing.assert_array_equal(check_labels(np.array([True, False])), [1, 0])


@pytest.mark.parametrize("y,n,k,error,match", [
    (np.array([0, 1, np.nan]), 3, 3, LabelError, "NaN"),
    (np.array([0, 1.5, 1]), 3, 3, LabelError, "whole numbers"),
    (np.array([0, 1, 3]), 3, 3, LabelError, "out of range"),
    (np.array([0, -1, 1]), 3, None, LabelError, "out of range"),
    (np.array(["a", "b", "c"]), 3, 3, LabelError, "not numeric"),
    (np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]), 3, 3, LabelError, "one-hot"),
    (np.eye(4)[[0, 1, 2]], 3, 3, LabelError, "columns"),
    (np.array([0, 1]), 3, 3, ShapeError, "one label per sample"),
    (np.zeros((3, 2, 2)), 3, 3, ShapeError, "one label per sample"),
])
def test_bad_labels_raise_one_error_type(y, n, k, error, match):
    with pytest.raises(error, match=match) as info:
        check_labels(y, n, k, parameter="y_val")
    assert info.value.parameter == "y_val"
    if error is LabelError:  # also the two types earlier code raised
        from trustmap.errors import DataError, TargetError

        assert isinstance(info.value, DataError) and isinstance(info.value, TargetError)
