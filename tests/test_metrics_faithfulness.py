"""Faithfulness metrics: hand-computed cases, analytic identities on a linear model, and the
oracle / random / reversed ordering that any faithful metric must give."""

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_same_state, model_state
from trustmap import Attribution, load_model
from trustmap.errors import InputError, ShapeError, TargetError
from trustmap.metrics import (Masking, average_drop, deletion, drop_increase, faithfulness_correlation,
                              increase_in_confidence, insertion, r2_at_budget)
from trustmap.metrics.masking import importance, rank_entries


def linear_net(W: np.ndarray, b: np.ndarray | None = None) -> nn.Module:
    """logits_k = sum_{c,l} W[k, c, l] x[c, l] + b_k, as a Conv1d over the whole length."""
    k, c, length = W.shape
    conv = nn.Conv1d(c, k, kernel_size=length)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
        conv.bias.copy_(torch.as_tensor(np.zeros(k) if b is None else b, dtype=torch.float32))
    return nn.Sequential(conv, nn.Flatten()).eval()


def np_logits(W, b, X):
    return np.einsum("kcl,ncl->nk", W, X) + b


def np_softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def linear_task():
    """Two classes, 2 channels x 16: weights known, labels noisy so the clean error is not zero."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 2, 16)).astype(np.float32)
    b = np.zeros(2, dtype=np.float32)
    X = rng.normal(size=(300, 2, 16)).astype(np.float32)
    z = np_logits(W, b, X)
    y = (z[:, 1] - z[:, 0] + rng.normal(scale=2.0, size=300) > 0).astype(np.int64)
    t = y  # explain the true class
    margin_w = W[t] - W[1 - t]                                   # (N, C, L)
    oracle = margin_w * X                                        # contribution of each entry to the margin
    random = rng.normal(size=X.shape)
    return {"W": W, "b": b, "X": X, "y": y, "net": linear_net(W, b), "oracle": oracle, "random": random,
            "reversed": -oracle, "target": t}


# ---- hand-computed cases --------------------------------------------------------------------------
def test_drop_and_increase_by_hand():
    W = np.array([[[1.0, -1.0, 2.0, 0.5]], [[0.0, 1.0, 1.0, -1.0]]], dtype=np.float32)
    net = linear_net(W)
    x = np.array([[[1.0, 2.0, -1.0, 3.0]]], dtype=np.float32)
    x2 = np.array([[[0.5, -1.0, 2.0, 1.0]]], dtype=np.float32)
    X = np.concatenate([x, x2])
    maps = np.array([[[0.1, 0.4, 0.3, 0.2]], [[0.9, 0.0, 0.5, 0.2]]])
    # frac 0.5 keeps 2 of 4 entries: sample 0 keeps positions 1, 2; sample 1 keeps 0, 2
    kept = X * np.array([[[0, 1, 1, 0]], [[1, 0, 1, 0]]], dtype=np.float32)
    target = np.array([1, 0])
    Y = np_softmax(np_logits(W, 0, X))[[0, 1], target]
    O = np_softmax(np_logits(W, 0, kept))[[0, 1], target]
    d, i = drop_increase(net, X, maps, frac=0.5, target=target)
    np.testing.assert_allclose(d.per_sample, 100 * np.maximum(0, Y - O) / Y, rtol=1e-5)
    np.testing.assert_allclose(i.per_sample, 100.0 * (O > Y))
    assert d.value == pytest.approx(np.mean(100 * np.maximum(0, Y - O) / Y), rel=1e-5)
    assert not d.higher_is_better and i.higher_is_better
    assert 0 < i.value < 100  # one sample gains confidence, one loses: a real test of both branches
    absolute = average_drop(net, X, maps, frac=0.5, target=target, relative=False)
    np.testing.assert_allclose(absolute.per_sample, 100 * np.maximum(0, Y - O), rtol=1e-5)
    assert increase_in_confidence(net, X, maps, frac=0.5, target=target).value == i.value
    assert d.masking["baseline"] == "zero"


def test_deletion_insertion_by_hand():
    W = np.array([[[1.0, -1.0, 2.0, 0.5]], [[0.0, 1.0, 1.0, -1.0]]], dtype=np.float32)
    net = linear_net(W)
    X = np.array([[[1.0, 2.0, -1.0, 3.0]]], dtype=np.float32)
    maps = np.array([[[0.1, 0.4, 0.3, 0.2]]])  # order: 1, 2, 3, 0
    order = [1, 2, 3, 0]
    dels, ins = [], []
    for k in range(5):
        removed = np.zeros(4, bool)
        removed[order[:k]] = True
        dels.append(np_softmax(np_logits(W, 0, X * ~removed))[0, 0])
        ins.append(np_softmax(np_logits(W, 0, X * removed))[0, 0])
    fr = np.linspace(0, 1, 5)
    d = deletion(net, X, maps, steps=4, target=0)
    i = insertion(net, X, maps, steps=4, target=0)
    np.testing.assert_allclose(d.extras["curves"][0], dels, rtol=1e-5)
    np.testing.assert_allclose(i.extras["curves"][0], ins, rtol=1e-5)
    np.testing.assert_allclose(d.extras["fractions"], fr)
    trap = lambda v: float(np.sum((np.asarray(v[1:]) + np.asarray(v[:-1])) / 2 * np.diff(fr)))  # noqa: E731
    assert d.value == pytest.approx(trap(dels), rel=1e-6)
    assert i.value == pytest.approx(trap(ins), rel=1e-6)
    # 'auto' steps: one entry per step
    assert deletion(net, X, maps, target=0).params["steps"] == 4
    # logit output: the curve is the target logit itself
    dl = deletion(net, X, maps, steps=4, target=0, output="logit")
    np.testing.assert_allclose(dl.extras["curves"][0], [np_logits(W, 0, X * ~np.isin(np.arange(4), order[:k]))[0, 0]
                                                        for k in range(5)], rtol=1e-5)


def test_constant_and_per_channel_baselines_by_hand():
    W = np.ones((2, 2, 3), dtype=np.float32)
    W[1] *= -1
    net = linear_net(W)
    X = np.arange(12, dtype=np.float32).reshape(2, 2, 3) / 10
    maps = -np.abs(X - 0.5)  # any map; keep frac 0.5 -> 3 entries
    for baseline, fill in ((2.5, np.full((1, 2, 1), 2.5)), (np.array([1.0, -1.0]), np.array([1.0, -1.0])[None, :, None])):
        r = drop_increase(net, X, maps, frac=0.5, target=0, baseline=baseline)[0]
        ranks = rank_entries(torch.as_tensor(maps), Masking()).numpy()
        kept = np.where(ranks < 3, X, fill)
        Y = np_softmax(np_logits(W, 0, X))[:, 0]
        O = np_softmax(np_logits(W, 0, kept))[:, 0]
        np.testing.assert_allclose(r.per_sample, 100 * np.maximum(0, Y - O) / Y, rtol=1e-5)
    mean = drop_increase(net, X, maps, frac=0.5, target=0, baseline="dataset_mean")[0]
    np.testing.assert_allclose(mean.masking["baseline_values"], X.mean((0, 2)))


def test_ranking_convention():
    maps = torch.tensor([[[0.0, 3.0, -5.0, 3.0, 1.0]]], dtype=torch.float64)
    raw = rank_entries(maps, Masking()).numpy()[0, 0]
    assert raw[1] in (0, 1) and raw[3] in (0, 1) and raw[4] == 2 and raw[0] == 3 and raw[2] == 4
    mk = Masking(normalize="abs")
    ab = rank_entries(importance(maps, mk), mk).numpy()[0, 0]
    assert ab[2] == 0
    # ties are broken by one fixed random order of positions: the same for every sample and every batch
    many = maps.repeat(4, 1, 1)
    np.testing.assert_array_equal(rank_entries(many, Masking()).numpy(), np.repeat(raw[None, None], 4, 0))
    # per-channel budgets rank within each channel
    two = torch.tensor([[[1.0, 2.0], [10.0, 20.0]]], dtype=torch.float64)
    np.testing.assert_array_equal(rank_entries(two, Masking(budget="per_channel")).numpy()[0], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(rank_entries(two, Masking()).numpy()[0], [[3, 2], [1, 0]])


# ---- analytic identities ---------------------------------------------------------------------------
def test_faithfulness_correlation_identity(linear_task):
    """On a linear model with logit output, the logit drop of a subset is exactly the sum of w*x over it:
    the map w_t * x correlates 1, its negative -1."""
    T = linear_task
    t = T["target"]
    exact = T["W"][t] * T["X"]
    r = faithfulness_correlation(T["net"], T["X"], exact, target=t, n_runs=30)
    np.testing.assert_allclose(r.per_sample, 1.0, atol=1e-5)
    neg = faithfulness_correlation(T["net"], T["X"], -exact, target=t, n_runs=30)
    np.testing.assert_allclose(neg.per_sample, -1.0, atol=1e-5)
    rnd = faithfulness_correlation(T["net"], T["X"], T["random"], target=t, n_runs=30)
    assert abs(rnd.value) < 0.1


def test_faithfulness_correlation_by_hand(linear_task):
    T = linear_task
    X, W, t = T["X"][:5].astype(np.float64), T["W"].astype(np.float64), T["target"][:5]
    maps = T["random"][:5]
    model = load_model(T["net"], dtype=torch.float64)  # float64: the hand computation is exact
    r = faithfulness_correlation(model, X, maps, target=t, n_runs=12, subset=0.25, output="prob")
    subsets = r.extras["subsets"]
    assert subsets.shape == (12, 2, 16) and (subsets.reshape(12, -1).sum(1) == 8).all()
    p0 = np_softmax(np_logits(W, 0, X))[np.arange(5), t]
    for i in range(5):
        sums = [(maps[i] * s).sum() for s in subsets]
        drops = [p0[i] - np_softmax(np_logits(W, 0, (X[i] * ~s)[None]))[0, t[i]] for s in subsets]
        assert r.per_sample[i] == pytest.approx(np.corrcoef(sums, drops)[0, 1], abs=1e-9)


def test_r2_by_hand(linear_task):
    T = linear_task
    X, y = T["X"], T["y"]
    r = r2_at_budget(T["net"], X, y, T["random"], frac=0.25)
    ranks = rank_entries(torch.as_tensor(T["random"]), Masking()).numpy()
    masked = np.where(ranks < 8, 0.0, X)
    c = (np_logits(T["W"], 0, X).argmax(1) != y).mean()
    m = (np_logits(T["W"], 0, masked).argmax(1) != y).mean()
    assert r.value == pytest.approx(1 - c / m)
    assert r.extras["low"] <= r.value <= r.extras["high"]
    assert r.params["k"] == 8
    assert r2_at_budget(T["net"], X, y, T["random"], tau=8.2).params["k"] == 8


# ---- oracle, random, reversed ----------------------------------------------------------------------
def test_oracle_beats_random_beats_reversed(linear_task):
    """Removing the largest margin contributions first is optimal for a linear two-class model, so the
    oracle's curve bounds every other map's sample by sample, and the reversed map is the worst."""
    T = linear_task
    net, X, t = T["net"], T["X"], T["target"]
    res = {}
    for name in ("oracle", "random", "reversed"):
        a = T[name]
        d, i = drop_increase(net, X, a, frac=0.3, target=t)
        res[name] = {"drop": d, "inc": i, "del": deletion(net, X, a, target=t), "ins": insertion(net, X, a, target=t),
                     "r2": r2_at_budget(net, X, T["y"], a, frac=0.2)}
    o, r, v = res["oracle"], res["random"], res["reversed"]
    tol = 1e-6
    assert (o["del"].per_sample <= r["del"].per_sample + tol).all() and (r["del"].value < v["del"].value)
    assert (o["del"].per_sample <= v["del"].per_sample + tol).all()
    assert (o["ins"].per_sample >= r["ins"].per_sample - tol).all() and (r["ins"].value > v["ins"].value)
    assert (o["drop"].per_sample <= r["drop"].per_sample + 1e-4).all() and r["drop"].value < v["drop"].value
    assert o["inc"].value > r["inc"].value > v["inc"].value
    assert o["r2"].value > r["r2"].value > v["r2"].value
    assert o["r2"].extras["low"] > r["r2"].extras["high"]
    # clear margins, not just ties
    assert o["del"].value < r["del"].value - 0.1 and o["ins"].value > r["ins"].value + 0.1


def test_attribution_targets_and_layouts(linear_task):
    """An Attribution carries its targets and layout; channels-last maps of the same samples give
    the same numbers."""
    T = linear_task
    X, a = T["X"][:40], T["oracle"][:40]
    t = T["target"][:40]
    att = Attribution(a, t, "oracle", layout="NCL")
    ref = drop_increase(T["net"], X, att, frac=0.3)[0]
    direct = drop_increase(T["net"], X, a, frac=0.3, target=t)[0]
    np.testing.assert_allclose(ref.per_sample, direct.per_sample)
    Xl, al = np.moveaxis(X, 1, -1), np.moveaxis(a, 1, -1)
    model = load_model(T["net"])
    last = drop_increase(model, Xl, al, frac=0.3, target=t, layout="NLC")[0]
    np.testing.assert_allclose(last.per_sample, ref.per_sample)
    # a different target changes the number
    other = drop_increase(T["net"], X, att, frac=0.3, target=1 - t)[0]
    assert not np.allclose(other.per_sample, ref.per_sample)


def test_budget_independent_of_batching(linear_task):
    T = linear_task
    X, a, t = T["X"][:50], T["random"][:50], T["target"][:50]
    whole = deletion(T["net"], X, a, target=t, steps=8)
    small = load_model(T["net"], max_batch=7)  # many chunks
    chunked = deletion(small, X, a, target=t, steps=8)
    np.testing.assert_allclose(chunked.extras["curves"], whole.extras["curves"], rtol=1e-6)
    parts = np.concatenate([deletion(T["net"], X[i:i + 10], a[i:i + 10], target=t[i:i + 10], steps=8).per_sample
                            for i in range(0, 50, 10)])
    np.testing.assert_allclose(parts, whole.per_sample, rtol=1e-6)


def test_model_left_untouched(linear_task):
    T = linear_task
    net = T["net"]
    net.train()
    before = model_state(net)
    drop_increase(net, T["X"][:20], T["random"][:20], frac=0.3)
    deletion(net, T["X"][:20], T["random"][:20], steps=5)
    faithfulness_correlation(net, T["X"][:20], T["random"][:20], n_runs=5)
    assert_same_state(before, model_state(net))
    net.eval()


@pytest.mark.filterwarnings("ignore::UserWarning")  # the localizer's small-data warnings
def test_r2_soft_mask_equals_localizer_r2():
    """A localizer's masks used as soft masks with its baseline give its own R² (the same masking)."""
    from trustmap import Localizer
    from trustmap.datasets import make_synthetic

    ds = make_synthetic(240, size=32, n_classes=2, distractor=False, seed=5)
    rng = np.random.default_rng(1)
    W = np.zeros((2, 1, 32), dtype=np.float32)
    W[:, 0] = rng.normal(size=(2, 32))
    net = linear_net(W)
    X = ds.X[:, None]
    y = (np_logits(W, 0, X).argmax(1) ^ (rng.random(240) < 0.1)).astype(np.int64)
    loc = Localizer(tau=3.0, baseline="zero", epochs=2, n_boot=200, seed=0).fit(net, X, y)
    att = loc.locate(X)
    ours = r2_at_budget(net, X, y, att, soft=True)
    theirs = loc.r2(X, y)
    assert ours.value == pytest.approx(theirs.estimate, abs=1e-9)
    assert ours.extras["clean_mean"] == pytest.approx(theirs.clean_risk)


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("frac", [0, 0.0, -0.1, 1.5, float("nan"), "0.3", True])
def test_frac_outside_unit_interval(linear_task, frac):
    T = linear_task
    with pytest.raises(InputError) as e:
        average_drop(T["net"], T["X"][:4], T["random"][:4], frac=frac)
    assert e.value.parameter == "frac" and "(0, 1]" in str(e.value)


def test_frac_one_keeps_everything(linear_task):
    T = linear_task
    d, i = drop_increase(T["net"], T["X"][:10], T["random"][:10], frac=1)
    assert d.value == 0 and i.value == 0


def test_maps_must_match_X(linear_task):
    T = linear_task
    with pytest.raises(ShapeError, match="shape of X") as e:
        deletion(T["net"], T["X"][:4], T["random"][:4, :, :10])
    assert e.value.parameter == "maps" and "(4, 2, 16)" in str(e.value)
    with pytest.raises(ShapeError):
        deletion(T["net"], T["X"][:4], T["random"][:5])
    with pytest.raises(ShapeError):  # an Attribution of other samples
        deletion(T["net"], T["X"][:4], Attribution(T["random"][:6], np.zeros(6), "x"))
    bad = T["random"][:4].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError):
        deletion(T["net"], T["X"][:4], bad)


def test_other_bad_parameters(linear_task):
    T = linear_task
    X, a = T["X"][:4], T["random"][:4]
    with pytest.raises(InputError, match="baseline"):
        deletion(T["net"], X, a, baseline="gray")
    with pytest.raises(ShapeError):
        deletion(T["net"], X, a, baseline=np.zeros(5))
    with pytest.raises(InputError, match="normalize"):
        deletion(T["net"], X, a, normalize="l2")
    with pytest.raises(InputError, match="output"):
        deletion(T["net"], X, a, output="softmax")
    with pytest.raises(InputError, match="steps"):
        deletion(T["net"], X, a, steps=0)
    with pytest.raises(InputError, match="budget"):
        r2_at_budget(T["net"], X, T["y"][:4], a)
    with pytest.raises(InputError):
        r2_at_budget(T["net"], X, T["y"][:4], a, frac=0.2, tau=3)
    with pytest.raises(TargetError) as e:
        r2_at_budget(T["net"], X, np.array([0, 1, 5, 0]), a, frac=0.2)
    assert e.value.parameter == "y"
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        r2_at_budget(T["net"], X, T["y"][:4], a, soft=True)


def test_images_and_per_channel_budget():
    """Rank 2, three channels: the oracle still bounds the curves, and a per-channel budget removes the same
    share of every channel."""
    rng = np.random.default_rng(4)
    W = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
    conv = nn.Conv2d(3, 2, kernel_size=(6, 5))
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(W))
        conv.bias.zero_()
    net = nn.Sequential(conv, nn.Flatten()).eval()
    X = rng.normal(size=(60, 3, 6, 5)).astype(np.float32)
    z = np.einsum("kchw,nchw->nk", W, X)
    t = z.argmax(1)
    oracle = (W[t] - W[1 - t]) * X
    random = rng.normal(size=X.shape)
    d_o, d_r = (deletion(net, X, a, target=t, steps=10) for a in (oracle, random))
    assert (d_o.per_sample <= d_r.per_sample + 1e-6).all() and d_o.value < d_r.value
    ranks = rank_entries(torch.as_tensor(random), Masking(budget="per_channel")).numpy()
    assert ranks.reshape(60, 3, -1).max(2).tolist() == [[29, 29, 29]] * 60
    r = drop_increase(net, X, random, frac=0.2, target=t, budget="per_channel")[0]
    W64, X64 = W.astype(np.float64), X.astype(np.float64)
    kept = np.where(ranks < 6, X64, 0.0)               # 6 of 30 positions kept in every channel
    Y = np_softmax(np.einsum("kchw,nchw->nk", W64, X64))[np.arange(60), t]
    O = np_softmax(np.einsum("kchw,nchw->nk", W64, kept))[np.arange(60), t]
    np.testing.assert_allclose(r.per_sample, 100 * np.maximum(0, Y - O) / Y, rtol=1e-4, atol=1e-4)
    # channels='mean' masks whole positions: all channels of a position go together
    mk = Masking(channels="mean")
    cr = rank_entries(importance(torch.as_tensor(random), mk), mk).numpy()
    assert (cr == cr[:, :1]).all()
