"""LIME and KernelSHAP: a linear model's segment weights recovered, efficiency, exact Shapley values
by brute force, the ridge solver against scikit-learn, batch invariance, segmentations, memory, errors."""

import itertools
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.errors import InputError, ShapeError
from trustmap.explain import explain
from trustmap.explain.lime import weighted_lstsq


def linear(c, spatial, k=3, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(c * int(np.prod(spatial)), k))
    return net.eval(), trustmap.load_model(net, input_shape=(c, *spatial), output="logits")


def small_cnn(c=1, L=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(c, 4, 3, padding=1), nn.ReLU(), nn.Conv1d(4, 4, 3, padding=1), nn.Tanh(),
                         nn.Flatten(), nn.Linear(4 * L, 3)).eval()


def contributions(w, x, b, labels):
    """Σ over each feature's entries of w · (x − b): the exact weights of a linear model's features."""
    d = (w * (x - b)).reshape(len(x), -1)
    lab = labels.reshape(-1)
    return np.stack([[row[lab == f].sum() for f in range(lab.max() + 1)] for row in d])


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_lime_recovers_a_linear_models_segment_weights(baseline):
    net, m = linear(1, (16,))
    x = np.random.default_rng(0).normal(size=(4, 1, 16)).astype("float32")
    a = explain(m, x, "lime", score="logit", alpha=0.0, baseline=baseline, n_samples=60, target=1)
    w = net[1].weight.detach().numpy()[1].reshape(1, 16)
    b = np.zeros_like(x) if baseline == "zero" else x.mean(2, keepdims=True)
    want = contributions(w, x, b, np.arange(16) // 4)
    np.testing.assert_allclose(a.extras["coefficients"], want, atol=1e-4)
    np.testing.assert_allclose(a.extras["r2"], 1.0, atol=1e-6)
    # the map copies each segment's coefficient over its 4 positions; 'split' shares it out
    np.testing.assert_allclose(a.maps[:, 0], np.repeat(want, 4, axis=1), atol=1e-4)
    s = explain(m, x, "lime", score="logit", alpha=0.0, baseline=baseline, n_samples=60, target=1, spread="split")
    np.testing.assert_allclose(s.maps[:, 0], np.repeat(want, 4, axis=1) / 4, atol=1e-4)
    # the default ridge (alpha = 1) shrinks, but keeps the ranking of clearly different weights
    r = explain(m, x, "lime", score="logit", baseline=baseline, target=1).extras["coefficients"]
    assert np.corrcoef(r.ravel(), want.ravel())[0, 1] > 0.99


def test_lime_per_channel_and_defaults_are_the_seeds():
    net, m = linear(3, (8,))
    x = np.random.default_rng(1).normal(size=(2, 3, 8)).astype("float32")
    a = explain(m, x, "lime", score="logit", alpha=0.0, per_channel=True, segment_size=2, n_samples=80, target=0)
    w = net[1].weight.detach().numpy()[0].reshape(3, 8)
    lab = (np.arange(8) // 2)[None] + 4 * np.arange(3)[:, None]
    np.testing.assert_allclose(a.extras["coefficients"], contributions(w, x, 0 * x, lab), atol=1e-4)
    assert not np.allclose(a.maps[:, 0], a.maps[:, 1])
    p = trustmap.explain.get_explainer("lime").params
    assert (p["segment_size"], p["n_samples"], p["kernel_width"], p["score"]) == (4, 300, 0.25, "prob")


def test_weighted_ridge_matches_scikit_learn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(2)
    X = rng.integers(0, 2, size=(3, 50, 6)).astype(float)
    y = rng.normal(size=(3, 50))
    w = rng.uniform(0.1, 1, size=(3, 50))
    for alpha in (0.0, 1.0):
        beta, c = weighted_lstsq(torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(w), alpha)
        for i in range(3):
            ref = Ridge(alpha=alpha).fit(X[i], y[i], sample_weight=w[i])
            np.testing.assert_allclose(beta[i].numpy(), ref.coef_, atol=1e-8)
            np.testing.assert_allclose(float(c[i]), ref.intercept_, atol=1e-8)


@pytest.mark.parametrize("score", ["prob", "logit"])
@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_kernelshap_efficiency(score, baseline):
    net = small_cnn(2, 16)
    x = np.random.default_rng(3).normal(size=(5, 2, 16)).astype("float32")
    # 16 features (per channel, segments of 2): sampled, not enumerated
    a = explain(net, x, "kernelshap", segment_size=2, per_channel=True, n_samples=120, score=score,
                baseline=baseline)
    assert not a.extras["exact"].any() and (a.extras["n_features"] == 16).all()
    delta = a.extras["score"] - a.extras["baseline_score"]
    np.testing.assert_allclose(a.extras["coefficients"].sum(1), delta, atol=1e-4)
    np.testing.assert_allclose(a.maps.reshape(5, -1).sum(1), delta, atol=1e-4)  # spread='split'
    with torch.no_grad():
        out = net(torch.as_tensor(x))
        fx = (torch.softmax(out, 1) if score == "prob" else out)[np.arange(5), a.targets].numpy()
    np.testing.assert_allclose(a.extras["score"], fx, atol=1e-5)


def test_kernelshap_on_a_linear_model_gives_the_contributions():
    net, m = linear(1, (16,))
    x = np.random.default_rng(4).normal(size=(3, 1, 16)).astype("float32")
    a = explain(m, x, "kernelshap", segment_size=2, n_samples=40, score="logit", target=2)
    assert not a.extras["exact"].any()
    w = net[1].weight.detach().numpy()[2].reshape(1, 16)
    np.testing.assert_allclose(a.extras["coefficients"], contributions(w, x, 0 * x, np.arange(16) // 2), atol=1e-4)


def brute_shapley(net, x, b, labels, target):
    """The Shapley formula over all coalitions, one forward pass per coalition."""
    F = labels.max() + 1
    def v(S):
        on = np.isin(labels, list(S))
        with torch.no_grad():
            return net(torch.as_tensor(np.where(on, x, b)[None]))[0, target].item()
    phi = np.zeros(F)
    for f in range(F):
        others = [g for g in range(F) if g != f]
        for k in range(F):
            for S in itertools.combinations(others, k):
                wgt = math.factorial(k) * math.factorial(F - k - 1) / math.factorial(F)
                phi[f] += wgt * (v(S + (f,)) - v(S))
    return phi


def test_kernelshap_enumerates_small_feature_sets_exactly():
    net = small_cnn(1, 16)
    x = np.random.default_rng(5).normal(size=(2, 1, 16)).astype("float32")
    a = explain(net, x, "kernelshap", n_samples=20, score="logit", target=0)  # 4 segments: 14 coalitions <= 18
    assert a.extras["exact"].all()
    lab = np.broadcast_to(np.arange(16) // 4, (1, 16))
    for i in range(2):
        np.testing.assert_allclose(a.extras["coefficients"][i], brute_shapley(net, x[i], 0 * x[i], lab, 0),
                                   atol=1e-5)


@pytest.mark.parametrize("method", ["lime", "kernelshap"])
def test_seeded_batch_equals_one_by_one(method):
    net = small_cnn(2, 16)
    x = np.random.default_rng(6).normal(size=(6, 2, 16)).astype("float32")
    m = trustmap.load_model(net, max_batch=50)
    kw = {"n_samples": 64, "seed": 3, "baseline": "noise"}
    a = explain(m, x, method, **kw)
    one = [explain(net, x[i:i + 1], method, **kw) for i in range(6)]
    np.testing.assert_allclose(np.concatenate([o.maps for o in one]), a.maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([o.extras["coefficients"] for o in one]), a.extras["coefficients"],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(explain(m, x, method, **kw).maps, a.maps)  # deterministic
    assert not np.allclose(explain(m, x, method, **{**kw, "seed": 4}).maps, a.maps)  # the seed matters


def test_superpixels_2d_with_varying_feature_counts():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3)).eval()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 1, 16, 16)).astype("float32")
    x[1, :, :8] += 3  # a different picture, a different number of superpixels
    for seg in ("quickshift", "slic"):
        a = explain(net, x, "kernelshap", segmentation=seg, n_samples=300, score="logit")
        nf = a.extras["n_features"]
        assert a.extras["segments"].shape == (4, 16, 16) and (a.extras["segments"].max((1, 2)) + 1 == nf).all()
        delta = a.extras["score"] - a.extras["baseline_score"]
        np.testing.assert_allclose(np.nansum(a.extras["coefficients"], 1), delta, atol=1e-4)
        assert np.isnan(a.extras["coefficients"][nf < nf.max(), -1]).all()
        one = np.concatenate([explain(net, x[i:i + 1], "kernelshap", segmentation=seg, n_samples=300,
                                      score="logit").maps for i in range(4)])
        np.testing.assert_allclose(one, a.maps, rtol=1e-5, atol=1e-6)
    assert len(set(explain(net, x, "lime", segmentation="quickshift").extras["n_features"])) > 1


def test_user_mask_in_any_sample_layout_equals_fixed_segments():
    net = small_cnn(2, 16)
    x = np.random.default_rng(8).normal(size=(3, 2, 16)).astype("float32")
    ref = explain(net, x, "lime", segment_size=4, n_samples=50)
    spatial = np.arange(16) // 4
    for mask in (spatial, np.stack([spatial] * 2), np.stack([spatial] * 2, -1), np.stack([spatial * 7] * 3)[:, None]
                 .repeat(2, 1)):
        np.testing.assert_array_equal(explain(net, x, "lime", segmentation=mask, n_samples=50).maps, ref.maps)
    # channels-last input (NLC) with a channels-last mask
    xl = np.moveaxis(x, 1, -1)
    a = explain(net, xl, "lime", segmentation=np.stack([spatial] * 2, -1), n_samples=50, layout="NLC")
    np.testing.assert_array_equal(a.maps, np.moveaxis(ref.maps, 1, -1))
    # a 2D grid of patches through 'fixed'
    torch.manual_seed(0)
    net2 = nn.Sequential(nn.Flatten(), nn.Linear(36, 2)).eval()
    m2 = trustmap.load_model(net2, input_shape=(1, 6, 6), output="logits")
    x2 = np.random.default_rng(9).normal(size=(2, 1, 6, 6)).astype("float32")
    b = explain(m2, x2, "lime", segmentation="fixed", segment_size=(3, 2), alpha=0.0, score="logit", n_samples=40, target=1)
    lab = (np.arange(6)[:, None] // 3) * 3 + np.arange(6)[None] // 2
    w = net2[1].weight.detach().numpy()[1].reshape(1, 6, 6)
    np.testing.assert_allclose(b.extras["coefficients"], contributions(w, x2, 0 * x2, lab), atol=1e-4)


def test_onnx_model_works(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W"], ["z"])],
        "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "lin.onnx")
    m = trustmap.load_model(tmp_path / "lin.onnx", output="logits")
    x = np.random.default_rng(1).normal(size=(3, 1, 16)).astype("float32")
    want = contributions(w[:, 1].reshape(1, 16), x, 0 * x, np.arange(16) // 4)
    a = explain(m, x, "lime", score="logit", alpha=0.0, n_samples=40, target=1)
    np.testing.assert_allclose(a.extras["coefficients"], want, atol=1e-4)
    k = explain(m, x, "kernelshap", score="logit", n_samples=40, target=1)
    np.testing.assert_allclose(k.extras["coefficients"], want, atol=1e-4)


def test_typed_errors():
    net = small_cnn(2, 16)
    x = np.zeros((2, 2, 16), "float32")
    with pytest.raises(ShapeError, match="segmentation does not match"):
        explain(net, x, "lime", segmentation=np.zeros(15, dtype=int))
    with pytest.raises(ShapeError, match="segmentation does not match"):
        explain(net, x, "kernelshap", segmentation=np.zeros((3, 16), dtype=int))
    with pytest.raises(InputError, match="n_samples"):
        explain(net, x, "kernelshap", segment_size=1, n_samples=16)  # 16 features
    with pytest.raises(ShapeError, match="baseline does not match"):
        explain(net, x, "lime", baseline=np.zeros((2, 8), "float32"))
    with pytest.raises(ShapeError, match="baseline does not match"):
        explain(net, x, "kernelshap", baseline=np.zeros((3, 2, 16), "float32"))
    with pytest.raises(InputError, match="2D"):
        explain(net, x, "lime", segmentation="slic")
    with pytest.raises(InputError, match="segmentation"):
        explain(net, x, "lime", segmentation="felzenszwalb")
    with pytest.raises(InputError, match="integers"):
        explain(net, x, "lime", segmentation=np.full(16, 0.5))
    with pytest.raises(ShapeError, match="segment_size"):
        explain(net, x, "lime", segment_size=(2, 2))
    with pytest.raises(InputError, match="kernel_width"):
        explain(net, x, "lime", kernel_width=0)
    with pytest.raises(InputError, match="n_samples"):
        explain(net, x, "lime", n_samples=1)


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np, torch
    from torch import nn
    import trustmap
    from trustmap.explain import explain
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(160, 10)).eval()
    x = np.random.default_rng(0).normal(size=(int(sys.argv[1]), 1, 40)).astype("float32")
    explain(net, x[:50], "lime", n_samples=100)  # warm up allocator and imports
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    a = explain(net, x, "lime", n_samples=int(sys.argv[2]))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024, np.isfinite(a.maps).all())
""")


@pytest.mark.slow
def test_memory_does_not_grow_with_samples_times_perturbations():
    """3000 inputs x 1000 perturbations = 3M perturbed inputs (480 MB as float32 if built at once):
    the peak RSS grows by far less, because rows are built per model chunk."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "3000", "1000"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    grew_mib, finite = out.stdout.split()
    assert finite == "True"
    assert float(grew_mib) < 120, grew_mib


def test_methods_point_at_the_known_region_of_the_synthetic_task():
    """synthetic-1d: the class lives in a known region; the maps' maxima must fall inside it."""
    from test_explain_synthetic import fit, flat_cnn, pointing
    from trustmap.data import load

    tr, te = load("synthetic-1d", "train", n_train=600), load("synthetic-1d", "test", n_test=60)
    Xtr, Xte = tr.internal(), te.internal()
    torch.manual_seed(0)
    net = fit(flat_cnn(1, 1, Xtr.shape[2:]), Xtr, tr.y, epochs=6)
    with torch.no_grad():
        ok = net(torch.as_tensor(Xte)).argmax(1).numpy() == te.y
    assert ok.mean() > 0.9
    mask = te.internal_mask()[ok]
    for method, kw in [("lime", {"n_samples": 200}), ("kernelshap", {"n_samples": 200}),
                       ("occlusion", {"window": 4, "stride": 2})]:
        a = explain(net, Xte[ok], method, layout="NCL", **kw)
        # LIME/KernelSHAP maps are constant over a segment: a hit when an entry tied at the maximum is inside
        m, g = a.maps.reshape(len(mask), -1), mask.reshape(len(mask), -1)
        hit = ((m == m.max(1, keepdims=True)) & g).any(1).mean()
        assert hit >= 0.85, (method, hit)
    # a random map points in the region far less often (the region is a small part of the signal)
    assert mask.mean() < 0.2 and pointing(np.random.default_rng(0).normal(size=mask.shape), mask) < 0.3


def test_kernelshap_default_samples_grow_with_features_and_results_save(tmp_path):
    from trustmap import Attribution
    from trustmap.explain import run_explain

    net = small_cnn(2, 16)
    x = np.random.default_rng(10).normal(size=(2, 2, 16)).astype("float32")
    # 32 features (segments of 1, per channel): the default takes max(300, 2 * 32 + 2) rows, which is
    # < 2^32, so it samples; efficiency still holds
    a = explain(net, x, "kernelshap", segment_size=1, per_channel=True)
    assert (a.extras["n_features"] == 32).all() and not a.extras["exact"].any()
    np.testing.assert_allclose(a.maps.reshape(2, -1).sum(1), a.extras["score"] - a.extras["baseline_score"],
                               atol=1e-4)
    written = run_explain(net, (x, np.array([0, 1])), "occlusion,lime,kernelshap", tmp_path, layout="NCL",
                          params={"lime": {"n_samples": 40}, "kernelshap": {"n_samples": 40}}, plots=1)
    for name in ("occlusion", "lime", "kernelshap"):
        back = Attribution.load(written[name][0])
        ref = explain(net, x, name, layout="NCL", **({} if name == "occlusion" else {"n_samples": 40}))
        np.testing.assert_array_equal(back.maps, ref.maps)
        if name != "occlusion":
            np.testing.assert_array_equal(back.extras["coefficients"], ref.extras["coefficients"])
