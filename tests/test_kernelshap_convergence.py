"""KernelSHAP and LIME with ``tol=``: stopped attributions within tolerance of exact Shapley values
(enumerated here), calibrated standard errors, the exact path, batch invariance, the CLI parameter,
typed errors."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from trustmap.errors import InputError
from trustmap.explain import explain
from trustmap.explain.shapley import tol_z
from trustmap.jobs.params import parse_params

L, SEG = 16, 2  # 8 features


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv1d(6, 6, 3, padding=1), nn.Tanh(),
                         nn.Flatten(), nn.Linear(6 * L, 3)).eval()


def data(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 1, L)).astype("float32") * 2


def exact_shapley(net, x, target):
    """The Shapley formula over all 2^F coalitions (feature j = positions SEG*j .. SEG*j+SEG-1, off = 0)."""
    f = L // SEG
    z = np.array(list(itertools.product([0, 1], repeat=f)), dtype=np.float32)
    xs = torch.as_tensor(np.repeat(z, SEG, 1) * x.reshape(1, L))[:, None]
    with torch.no_grad():
        v = torch.softmax(net(xs), 1)[:, target].double().numpy()
    index = {tuple(r.astype(int)): i for i, r in enumerate(z)}
    phi = np.zeros(f)
    for j in range(f):
        for r in z:
            if r[j] == 0:
                k = int(r.sum())
                on = r.copy()
                on[j] = 1
                wgt = math.factorial(k) * math.factorial(f - k - 1) / math.factorial(f)
                phi[j] += wgt * (v[index[tuple(on.astype(int))]] - v[index[tuple(r.astype(int))]])
    return phi


@pytest.fixture(scope="module")
def problem():
    net = cnn()
    x = data(24)
    with torch.no_grad():
        tg = net(torch.as_tensor(x)).argmax(1).numpy()
    ref = np.stack([exact_shapley(net, x[i], int(tg[i])) for i in range(len(x))])
    return net, x, tg, ref


def ks(net, x, tg, **kw):
    return explain(net, x, "kernelshap", target=tg, segmentation="fixed", segment_size=SEG, **kw)


def test_exact_enumeration_equals_shapley(problem):
    net, x, tg, ref = problem
    a = ks(net, x, tg, n_samples=2 ** 8)
    assert a.extras["exact"].all() and (a.extras["n_evals"] == 2 ** 8).all()
    np.testing.assert_allclose(a.extras["coefficients"], ref, atol=1e-6)
    assert (a.extras["coefficient_stderr"] == 0).all() and a.extras["stderr"].shape == a.maps.shape


def test_tol_stops_within_tolerance_of_exact_shapley(problem):
    net, x, tg, ref = problem
    tol = 1.5e-4  # the scores are probabilities; this model's Shapley values are ~0.01
    z = tol_z(8)
    a = ks(net, x, tg, n_samples=240, tol=tol)  # 240 < 2^8: sampled, never enumerated
    se, ev = a.extras["coefficient_stderr"], a.extras["n_evals"]
    assert not a.extras["exact"].any() and 2.7 < z < 2.8
    conv = a.extras["converged"]
    assert conv.mean() >= 0.8 and (se[conv].max(1) <= tol / z).all() and (se[~conv].max(1) > tol / z).all()
    assert (ev[conv] <= 240).all() and ev.min() < 240 and (ev[~conv] >= 238).all()  # stopped early
    err = np.abs(a.extras["coefficients"] - ref)
    assert (err[conv].max(1) <= tol).mean() >= 0.9  # documented sense: every attribution within tol
    # efficiency is exact whatever the stop
    np.testing.assert_allclose(a.extras["coefficients"].sum(1), a.extras["score"] - a.extras["baseline_score"],
                               atol=1e-9)
    # a tighter tolerance spends more evaluations and lands closer
    b = ks(net, x, tg, n_samples=240, tol=tol / 3)
    assert b.extras["n_evals"].mean() > ev.mean()
    assert np.abs(b.extras["coefficients"] - ref).mean() < err.mean()


def test_tol_switches_to_enumeration_when_cheaper(problem):
    net, x, tg, ref = problem
    a = ks(net, x[:6], tg[:6], n_samples=2000, tol=1e-7)  # unreachable by sampling: enumerate at the end
    assert a.extras["exact"].all() and a.extras["converged"].all()
    assert (a.extras["n_evals"] < 2 ** 8 + 240).all()
    np.testing.assert_allclose(a.extras["coefficients"], ref[:6], atol=1e-6)


@pytest.mark.parametrize("control", ["auto", "none"])
def test_standard_errors_are_calibrated(problem, control):
    net, x, tg, ref = problem
    hits = []
    for seed in range(3):
        # the control variate's SE needs 2 x its 35 coefficients in rows (8 features)
        a = ks(net, x, tg, n_samples=96 if control == "auto" else 64, seed=seed, control=control)
        assert (a.extras["control"] == (control == "auto")).all()
        err, se = np.abs(a.extras["coefficients"] - ref), a.extras["coefficient_stderr"]
        assert (se > 0).all()
        hits.append(err <= 2 * se)
    cover = np.mean(hits)
    assert 0.88 <= cover <= 0.995, cover  # ±2 SE nominally 95 %; neither too narrow nor vacuous


def test_an_interpolating_fit_reports_no_standard_error_and_keeps_sampling():
    # 16 features, 2 F + 2 rows: as many pairs as unknowns, residuals ~0; a zero SE would be a false stop
    net = cnn(2)
    x = data(3, 2)
    kw = dict(target=0, segmentation="fixed", segment_size=1)
    a = explain(net, x, "kernelshap", n_samples=34, **kw)
    assert np.isinf(a.extras["coefficient_stderr"]).all() and np.isfinite(a.maps).all()
    b = explain(net, x, "kernelshap", n_samples=400, tol=1.0, **kw)  # any tolerance: needs a real SE first
    assert (b.extras["n_evals"] > 34).all() and b.extras["converged"].all()
    assert np.isfinite(b.extras["coefficient_stderr"]).all()


def test_batch_invariance_with_tol(problem):
    net, x, tg, _ = problem
    a = ks(net, x[:6], tg[:6], n_samples=240, tol=1.5e-4)
    for i in (0, 3, 5):
        one = ks(net, x[i:i + 1], tg[i:i + 1], n_samples=240, tol=1.5e-4)
        np.testing.assert_allclose(one.extras["coefficients"][0], a.extras["coefficients"][i], atol=1e-10)
        np.testing.assert_allclose(one.extras["coefficient_stderr"][0], a.extras["coefficient_stderr"][i],
                                   atol=1e-10)
        assert one.extras["n_evals"][0] == a.extras["n_evals"][i]


@pytest.mark.parametrize("method", ["kernelshap", "lime"])
@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_tol_is_validated(problem, method, bad):
    net, x, tg, _ = problem
    with pytest.raises(InputError, match="tol") as e:
        explain(net, x[:1], method, tol=bad)
    assert isinstance(e.value, ValueError)


def test_lime_tol_reports_calibrated_stderr_in_the_maps_layout():
    net = cnn(1)
    x = data(12, 1)
    xl = np.ascontiguousarray(x.transpose(0, 2, 1))  # (N, L, 1): channels last
    # alpha=0: the SE is the sampling spread of the fit at its own n; a ridge penalty's shrinkage moves
    # with n and is not part of it
    kw = dict(segmentation="fixed", segment_size=SEG, target=0, layout="NLC", alpha=0.0)
    ref = explain(net, xl, "lime", n_samples=20000, seed=7, **kw).extras["coefficients"]
    a = explain(net, xl, "lime", n_samples=2000, tol=0.03, **kw)
    se, ev = a.extras["coefficient_stderr"], a.extras["n_evals"]
    assert a.extras["stderr"].shape == a.maps.shape == xl.shape
    # copy spread: every position of feature j carries feature j's SE
    np.testing.assert_allclose(a.extras["stderr"][:, ::SEG, 0], se)
    assert a.extras["converged"].all() and (se.max(1) <= 0.03 / tol_z(8)).all() and (ev < 2000).all()
    assert (np.abs(a.extras["coefficients"] - ref) <= 2 * se + 1e-4).mean() >= 0.88
    # without tol: exactly n_samples rows, SE reported too
    b = explain(net, xl, "lime", n_samples=300, **kw)
    assert (b.extras["n_evals"] == 300).all() and np.isfinite(b.extras["coefficient_stderr"]).all()
    assert "converged" not in b.extras


def test_tol_reaches_the_cli_param_mechanism():
    assert parse_params(["kernelshap.tol=0.01", "lime.tol=1e-3"]) == {"kernelshap": {"tol": 0.01},
                                                                      "lime": {"tol": 0.001}}


def test_cli_tol_param_runs_and_saves_the_standard_errors(tmp_path, capsys):
    from trustmap import Attribution, zoo
    from trustmap.cli import main

    torch.manual_seed(0)
    path = zoo.save(zoo.build("mnist1d_cnn", n_classes=3, length=40), tmp_path / "m.safetensors")
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(3, 40)).astype("float32"))
    base = ["explain", "--model", str(path), "--data", str(tmp_path / "X.npy"), "--method", "kernelshap",
            "--plots", "0", "--quiet"]
    assert main(base + ["--param", "kernelshap.tol=0.01", "--param", "kernelshap.n_samples=500",
                        "--out", str(tmp_path / "o")]) == 0
    a = Attribution.load(tmp_path / "o" / "kernelshap.npz")
    assert a.params["tol"] == 0.01 and a.extras["stderr"].shape == a.maps.shape == (3, 40)
    assert (a.extras["n_evals"] <= 500).all() and a.extras["converged"].dtype == bool
    capsys.readouterr()
    assert main(base + ["--param", "kernelshap.tol=-1", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tol" in err[0]


def test_lstsq_with_cov_fits_like_weighted_lstsq_and_its_cov_is_the_jackknife():
    from trustmap.explain.lime import weighted_lstsq
    from trustmap.explain.shapley import lstsq_with_cov

    g = torch.Generator().manual_seed(0)
    X = torch.rand((3, 40, 5), generator=g, dtype=torch.float64).round()
    y = X @ torch.tensor([1.0, -2, 0.5, 0, 3], dtype=torch.float64) + 0.3 * torch.randn((3, 40), generator=g,
                                                                                       dtype=torch.float64)
    w = torch.rand((3, 40), generator=g, dtype=torch.float64) + 0.5
    for alpha, intercept in ((0.0, True), (1.0, True), (0.0, False)):
        b0, c0 = weighted_lstsq(X, y, w, alpha, intercept)
        b1, c1, cov = lstsq_with_cov(X, y, w, alpha, intercept)
        torch.testing.assert_close(b1, b0)
        torch.testing.assert_close(c1, c0)
    # no intercept, iid rows: the closed form equals the leave-one-out jackknife computed by refitting
    b, _, cov = lstsq_with_cov(X, y, w, 0.0, intercept=False)
    loo = torch.stack([weighted_lstsq(X[:, torch.arange(40) != i], y[:, torch.arange(40) != i],
                                      w[:, torch.arange(40) != i], 0.0, False)[0] for i in range(40)], 1)
    dc = loo - loo.mean(1, keepdim=True)
    torch.testing.assert_close(cov, dc.transpose(1, 2) @ dc * (39 / 40))


def test_control_variate_converges_to_exact_shapley_with_fewer_evaluations(problem):
    # the softmax surrogate's exact Shapley values + KernelSHAP of the residual: consistent, and
    # closer to the enumerated values than plain KernelSHAP at the same budget
    net, x, tg, ref = problem
    errs = {}
    for control in ("auto", "none"):
        e = []
        for n_samples in (48, 128, 240):
            a = ks(net, x, tg, n_samples=n_samples, control=control)
            assert (a.extras["n_evals"] == n_samples).all()  # the surrogate costs no model rows
            np.testing.assert_allclose(a.extras["coefficients"].sum(1),
                                       a.extras["score"] - a.extras["baseline_score"], atol=1e-9)
            e.append(np.abs(a.extras["coefficients"] - ref).max(1).mean())
        errs[control] = e
    assert errs["auto"][2] < errs["auto"][0] and errs["auto"][2] < 2e-4  # converges
    assert all(c < n for c, n in zip(errs["auto"], errs["none"])), errs


def test_control_variate_is_exact_for_a_softmax_of_linear_logits():
    # logits linear in the input are linear in the coalition: the surrogate is the model itself
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv1d(1, 2, 1), nn.Flatten(), nn.Linear(2 * L, 4)).eval()  # linear
    x = data(5, 3)
    with torch.no_grad():
        tg = net(torch.as_tensor(x)).argmax(1).numpy()
    ref = np.stack([exact_shapley(net, x[i], int(tg[i])) for i in range(len(x))])
    a = ks(net, x, tg, n_samples=80)
    b = ks(net, x, tg, n_samples=80, control="none")
    np.testing.assert_allclose(a.extras["coefficients"], ref, atol=1e-7)
    assert np.abs(b.extras["coefficients"] - ref).max() > 1e-5
    assert a.extras["control"].all() and (a.extras["coefficient_stderr"] < 1e-6).all()


def test_control_variate_only_where_it_applies(problem):
    net, x, tg, _ = problem
    assert not ks(net, x[:2], tg[:2], n_samples=64, score="logit").extras["control"].any()
    assert not ks(net, x[:2], tg[:2], n_samples=2 ** 8).extras["control"].any()  # exact: no surrogate
    with pytest.raises(InputError):
        ks(net, x[:2], tg[:2], n_samples=64, control="softmax")
    # the CLI's --param kernelshap.control=none arrives as None
    params = parse_params(["kernelshap.control=none"])["kernelshap"]
    assert not ks(net, x[:2], tg[:2], n_samples=64, **params).extras["control"].any()


def test_control_variate_standard_error_waits_for_enough_rows(problem):
    net, x, tg, _ = problem
    a = ks(net, x[:4], tg[:4], n_samples=64)  # 62 coalitions < 2 x 35 surrogate coefficients
    assert a.extras["control"].all() and np.isinf(a.extras["coefficient_stderr"]).all()
    b = ks(net, x[:4], tg[:4], n_samples=64, tol=1.0)  # tol: the plain estimate and its SE instead
    c = ks(net, x[:4], tg[:4], n_samples=64, control="none")
    assert not b.extras["control"].any() and b.extras["converged"].all()
    np.testing.assert_allclose(b.extras["coefficients"], c.extras["coefficients"], atol=1e-12)
    np.testing.assert_allclose(b.extras["coefficient_stderr"], c.extras["coefficient_stderr"], atol=1e-12)


def test_ridge_gcv_keeps_interactions_the_rows_determine_and_drops_those_they_do_not():
    from trustmap.explain.shapley import ridge_gcv

    g = torch.Generator().manual_seed(1)
    f, q = 6, 15
    iu = torch.triu_indices(f, f, 1)

    def design(m):
        Z = torch.randint(0, 2, (2, m, f), generator=g).double()
        return torch.cat([Z, Z[..., iu[0]] * Z[..., iu[1]]], -1)

    a = torch.randn((2, f, 1), generator=g, dtype=torch.float64)
    b = torch.randn((2, q, 1), generator=g, dtype=torch.float64)
    # many rows of an exact quadratic: (almost) no penalty, the coefficients recovered
    X = design(200)
    Y = X @ torch.cat([a, b], 1)
    B = ridge_gcv(X, torch.ones(200, dtype=torch.float64), Y, f)
    torch.testing.assert_close(B, torch.cat([a, b], 1), atol=1e-3, rtol=0)
    # fewer rows (12) than coefficients (21) of an additive game plus noise: the interactions are shrunk
    # away and the first-order part is recovered far better than by the minimum-norm interpolant
    X = design(12)
    Y = X[..., :f] @ a + 0.01 * torch.randn((2, 12, 1), generator=g, dtype=torch.float64)
    B = ridge_gcv(X, torch.ones(12, dtype=torch.float64), Y, f)
    B0 = torch.linalg.pinv(X) @ Y
    assert B[:, f:].abs().max() < 0.05
    assert (B[:, :f] - a).abs().max() < 0.05 < (B0[:, :f] - a).abs().max()


def test_feature_adjacency_of_segments_patches_and_channels():
    from trustmap.explain.lime import feature_adjacency

    seg1d = torch.as_tensor(np.arange(12) // 3)[None, None]  # (1, C=1, 12): 4 segments in a row
    adj = feature_adjacency(seg1d, 4)[0]
    assert adj.tolist() == [[abs(i - j) == 1 for j in range(4)] for i in range(4)]
    patches = torch.as_tensor((np.arange(4)[:, None] // 2) * 2 + np.arange(4)[None] // 2)[None, None]  # 2x2 patches
    adj = feature_adjacency(patches, 4)[0]
    assert adj.sum() == 8 and not adj[0, 3] and not adj[1, 2] and adj[0, 1] and adj[0, 2]
    per_channel = torch.as_tensor(np.arange(2)[:, None] * 2 + np.arange(4)[None] // 2)[None]  # (1, 2, 4)
    adj = feature_adjacency(per_channel, 4)[0]
    assert adj[0, 1] and adj[0, 2] and adj[1, 3] and not adj[0, 3]


def test_graph_hops_of_a_chain_and_a_split_graph():
    from trustmap.explain.shapley import graph_hops

    chain = torch.as_tensor([[abs(i - j) == 1 for j in range(5)] for i in range(5)])[None]
    torch.testing.assert_close(graph_hops(chain)[0], torch.as_tensor(
        [[abs(i - j) for j in range(5)] for i in range(5)], dtype=torch.float64))
    split = torch.zeros((1, 3, 3), dtype=torch.bool)
    split[0, 0, 1] = split[0, 1, 0] = True  # feature 2 touches nothing: unreachable = F + 1
    assert graph_hops(split)[0].tolist() == [[0, 1, 4], [1, 0, 4], [4, 4, 0]]
