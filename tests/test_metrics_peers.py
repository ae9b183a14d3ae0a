"""The metrics the peers have, against their definitions.

Quantus and Captum are not installed here (Quantus imports torchvision), so each reference below is
the peer's formula written as the peer writes it: a per-sample loop over numpy arrays, channels-first,
with the peer's defaults (Quantus ``quantus/metrics/...``; Captum ``captum/metrics/_core``). Deterministic
metrics must agree to 1e-6; random ones use the same draws (exact) and, with independent draws, agree
within sampling error.
"""

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from trustmap import Attribution, load_model
from trustmap.errors import InputError
from trustmap.explain import get_explainer
from trustmap.metrics import map_complexity as C
from trustmap.metrics import robustness as R


def small_cnn(c=2, length=24, k=3, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv1d(c, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * length, k))
    return net.eval()


def linear_net(W):
    k, c, length = W.shape
    conv = nn.Conv1d(c, k, kernel_size=length, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(W, dtype=torch.float32))
    return nn.Sequential(conv, nn.Flatten()).eval()


@pytest.fixture(scope="module")
def cnn_task():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 2, 24)).astype(np.float32)
    net = small_cnn()
    return net, X


def grad_x_input(net, x, target):
    """Captum-style explain function: input x gradient of the target logit, numpy in / out."""
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    out = net(t)
    out.gather(1, torch.as_tensor(target).view(-1, 1)).sum().backward()
    return (t.grad * t).detach().double().numpy()


# ---- complexity (Quantus' Sparseness, Complexity, EffectiveComplexity) ---------------------------
def quantus_normalise_by_max(a):
    return a / np.max(np.abs(a))


def quantus_sparseness(a):
    a = quantus_normalise_by_max(np.abs(a))
    a = np.array(np.reshape(a, (np.prod(a.shape),)), dtype=np.float64)
    a += 0.0000001
    a = np.sort(a)
    return (np.sum((2 * np.arange(1, a.shape[0] + 1) - a.shape[0] - 1) * a)) / (a.shape[0] * np.sum(a))


def quantus_complexity(a):
    a = quantus_normalise_by_max(np.abs(a))
    a = np.array(np.reshape(a, (np.prod(a.shape),)), dtype=np.float64) / np.sum(np.abs(a))
    return scipy.stats.entropy(pk=a)


def quantus_effective_complexity(a, eps=1e-5):
    a = quantus_normalise_by_max(np.abs(a))
    return int(np.sum(a > eps))


def test_complexity_family_equals_quantus():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(9, 2, 30))
    maps[3] *= (rng.random(size=(2, 30)) < 0.1)          # sparse map
    maps[4, :, :] = 0.0
    maps[4, 1, 7] = 5.0                                   # one entry
    maps[5] = 1.0                                         # flat
    maps[6, 0, :5] = 1e-7                                 # tiny entries around eps
    attr = Attribution(maps, np.zeros(9, int), "test", layout="NCL")
    for fn, ref in ((C.sparseness, quantus_sparseness), (C.complexity, quantus_complexity),
                    (C.effective_complexity, quantus_effective_complexity)):
        got = fn(attr).per_sample
        want = np.array([ref(m) for m in maps])
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=fn.__name__)
    # an array in X's layout (channels-last) gives the same numbers as the Attribution
    net = small_cnn(c=2, length=30)
    X = rng.normal(size=(9, 30, 2)).astype(np.float32)
    got = C.sparseness(np.moveaxis(maps, 1, 2), X=X, model=net, layout="NLC").per_sample
    np.testing.assert_allclose(got, [quantus_sparseness(m) for m in maps], atol=1e-6)
    # the extremes: one entry is as sparse and as simple as a map gets, a flat map the opposite
    assert C.sparseness(attr).per_sample[4] == pytest.approx(59 / 60, abs=1e-4) and C.sparseness(attr).per_sample[5] < 1e-6
    assert C.complexity(attr).per_sample[4] == pytest.approx(0.0, abs=1e-12)
    assert C.complexity(attr).per_sample[5] == pytest.approx(np.log(60))
    assert C.effective_complexity(attr).per_sample[4] == 1


def test_zero_map_complexity_is_undefined():
    attr = Attribution(np.zeros((2, 1, 8)), np.zeros(2, int), "zero", layout="NCL")
    assert np.isnan(C.complexity(attr).per_sample).all()
    with pytest.raises(InputError):
        C.effective_complexity(attr, eps=-1)


# ---- robustness (Captum's sensitivity_max, Quantus' LocalLipschitzEstimate, RandomLogit) -----------
def captum_sensitivity(explain, net, X, targets, draws, reduce=np.max):
    """Captum's sensitivity_max: per perturbation ||expl(x + d) - expl(x)||_fro / ||expl(x)||_fro."""
    out = []
    for i in range(len(X)):
        x, t = X[i:i + 1], targets[i:i + 1]
        e = explain(net, x, t)
        en = np.linalg.norm(e.ravel())
        en = 1.0 if en == 0 else en
        vals = [np.linalg.norm((explain(net, (x + d[None]).astype(np.float32), t) - e).ravel()) / en
                for d in draws[i]]
        out.append(reduce(vals))
    return np.array(out)


def quantus_local_lipschitz(explain, net, X, targets, draws):
    out = []
    for i in range(len(X)):
        x, t = X[i:i + 1], targets[i:i + 1]
        a = explain(net, x, t)
        best = 0.0
        for d in draws[i]:
            xp = (x + d[None]).astype(np.float32)
            ap = explain(net, xp, t)
            num = ((a - ap) ** 2).sum() ** 0.5
            den = ((x.astype(np.float64) - xp) ** 2).sum() ** 0.5
            best = max(best, num / den)
        out.append(best)
    return np.array(out)


def test_sensitivity_equals_captum_with_the_same_draws(cnn_task):
    net, X = cnn_task
    targets = load_model(net).predict(X)
    ex = get_explainer("saliency", absolute=False, times_input=True)
    attr = ex.explain(net, X, target=targets)
    mx, av = R.sensitivity(net, X, attr, n_samples=6, radius=0.05, seed=3)
    rng = np.random.default_rng(3)
    draws = [rng.uniform(-0.05, 0.05, size=(6,) + X.shape[1:]) for _ in range(len(X))]
    np.testing.assert_allclose(mx.per_sample, captum_sensitivity(grad_x_input, net, X, targets, draws), atol=1e-6)
    np.testing.assert_allclose(av.per_sample, captum_sensitivity(grad_x_input, net, X, targets, draws, np.mean),
                               atol=1e-6)
    # independent draws: the averages agree within sampling error
    rng = np.random.default_rng(12345)
    draws = [rng.uniform(-0.05, 0.05, size=(40,) + X.shape[1:]) for _ in range(len(X))]
    ref = captum_sensitivity(grad_x_input, net, X, targets, draws, np.mean)
    ours = R.avg_sensitivity(net, X, attr, n_samples=40, radius=0.05, seed=0).per_sample
    assert abs(ours.mean() - ref.mean()) < 4 * ref.std() / np.sqrt(len(X)) + 1e-9


def test_local_lipschitz_equals_quantus_with_the_same_draws(cnn_task):
    net, X = cnn_task
    targets = load_model(net).predict(X)
    attr = get_explainer("saliency", absolute=False, times_input=True).explain(net, X, target=targets)
    got = R.local_lipschitz(net, X, attr, n_samples=5, std=0.1, seed=7).per_sample
    rng = np.random.default_rng(7)
    draws = [rng.normal(0.0, 0.1, size=(5,) + X.shape[1:]) for _ in range(len(X))]
    np.testing.assert_allclose(got, quantus_local_lipschitz(grad_x_input, net, X, targets, draws), rtol=1e-6)


def test_robustness_known_answers():
    """Linear model: saliency's map is the weights (sensitivity 0, Lipschitz 0); gradient x input moves
    with the input (||w d|| / ||w x||); a map of noise is the least robust."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 1, 16)).astype(np.float32)
    net = linear_net(W)
    X = rng.normal(size=(10, 1, 16)).astype(np.float32)

    def noise_explainer(model, x, target, layout):
        return np.random.default_rng(len(x)).normal(size=np.shape(x))

    res = {}
    for name, explainer in (("saliency", get_explainer("saliency", absolute=False)),
                            ("gxi", get_explainer("saliency", absolute=False, times_input=True)),
                            ("noise", noise_explainer)):
        res[name] = (R.max_sensitivity(net, X, explainer=explainer, n_samples=8, seed=1).value,
                     R.local_lipschitz(net, X, explainer=explainer, n_samples=8, seed=1).value)
    assert res["saliency"][0] == pytest.approx(0.0, abs=1e-6) and res["saliency"][1] == pytest.approx(0.0, abs=1e-4)
    assert res["saliency"][0] < res["gxi"][0] < res["noise"][0]
    assert res["saliency"][1] < res["gxi"][1] < res["noise"][1]
    # gradient x input on a linear model: Lipschitz constant = max_j ||w d_j|| / ||d_j|| <= max |w|
    assert res["gxi"][1] <= np.abs(W).max() + 1e-5


def test_random_logit(cnn_task):
    net, X = cnn_task
    m = load_model(net)
    targets = m.predict(X)
    attr = get_explainer("saliency", absolute=False, times_input=True).explain(net, X, target=targets)
    res = R.random_logit(net, X, attr, similarity="spearman", seed=2)
    off = res.extras["other_class"]
    assert (off != targets).all() and set(off) <= {0, 1, 2}
    from trustmap.metrics import spearman_rows

    other = np.concatenate([grad_x_input(net, X[i:i + 1], off[i:i + 1]) for i in range(len(X))])
    want = spearman_rows(attr.internal(), other)
    np.testing.assert_allclose(res.per_sample, want, atol=1e-6)

    # a class-blind map (the input itself) is maximally similar across classes
    def blind(model, x, target, layout):
        return np.asarray(x, dtype=np.float64)

    assert R.random_logit(net, X, explainer=blind, seed=2).value == pytest.approx(1.0)
    assert res.value < 0.9


def test_rerun_metrics_need_an_explainer(cnn_task):
    net, X = cnn_task
    with pytest.raises(InputError):
        R.max_sensitivity(net, X, np.ones_like(X))


# ---- ROAD (Quantus' ROAD with noisy_linear_imputation) -------------------------------------------------
def quantus_noisy_linear_imputation(arr, indices, offsets):
    """Quantus/ROAD's imputation (noise 0): arr (C, *spatial), indices into the flattened spatial grid."""
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    spatial = arr.shape[1:]
    flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
    mask = np.ones(flat.shape[1], bool)
    mask[indices] = False
    var = {int(k): v for v, k in enumerate(indices)}
    a = lil_matrix((len(indices), len(indices)))
    b = np.zeros((len(indices), arr.shape[0]))
    coords = np.array(np.unravel_index(indices, spatial)).T
    for v, c in enumerate(coords):
        for off, w in offsets:
            nb = c + np.array(off)
            if ((nb < 0) | (nb >= np.array(spatial))).any():
                continue
            k = int(np.ravel_multi_index(tuple(nb), spatial))
            a[v, v] += w
            if mask[k]:
                b[v] += w * flat[:, k]
            else:
                a[v, var[k]] -= w
    res = np.atleast_2d(spsolve(a.tocsc(), b))
    out = flat.copy()
    out[:, indices] = res.reshape(len(indices), -1).T
    return out.reshape(arr.shape)


def small_cnn2d(c=1, hw=8, k=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * hw * hw, k)).eval()


def test_noisy_linear_imputation_equals_road_code():
    from trustmap.metrics.road import NEIGHBOURS, noisy_linear_imputation

    rng = np.random.default_rng(0)
    for shape in ((2, 9, 7), (3, 30)):
        x = rng.normal(size=(4,) + shape)
        spatial = int(np.prod(shape[1:]))
        removed = np.zeros((4,) + shape, bool)
        refs = []
        for i, frac in enumerate((0.1, 0.5, 0.9, 0.99)):
            idx = rng.permutation(spatial)[:int(spatial * frac)]
            removed[i].reshape(shape[0], -1)[:, idx] = True
            refs.append(quantus_noisy_linear_imputation(x[i], idx, NEIGHBOURS[len(shape) - 1]))
        got = noisy_linear_imputation(torch.as_tensor(x), torch.as_tensor(removed), noise=0.0).numpy()
        np.testing.assert_allclose(got, np.stack(refs), atol=1e-8)                 # direct solve (small grids)
        cg = noisy_linear_imputation(torch.as_tensor(x), torch.as_tensor(removed), noise=0.0, max_iter=500).numpy()
        np.testing.assert_allclose(cg, np.stack(refs), atol=1e-8)                  # conjugate gradients
        noisy = noisy_linear_imputation(torch.as_tensor(x), torch.as_tensor(removed), noise=0.5,
                                        generator=torch.Generator().manual_seed(0)).numpy()
        d = (noisy - got)[removed]
        assert (noisy[~removed] == x[~removed]).all() and 0.4 < d.std() < 0.6


def quantus_road(net, X, y, a_batch, percentages, offsets):
    """Quantus' ROAD.evaluate_batch with noise 0: accuracy per percentage (a_batch channel-summed)."""
    flat = a_batch.reshape(len(a_batch), -1)
    a_size = a_batch[0].size
    order = np.argsort(-flat, axis=1, kind="stable")
    res = []
    for p in percentages:
        top = order[:, :int(a_size * p / 100)]
        xp = np.stack([quantus_noisy_linear_imputation(x, t, offsets) if len(t) else x for x, t in zip(X, top)])
        pred = net(torch.as_tensor(xp, dtype=torch.float32)).argmax(1).numpy()
        res.append(pred == y)
    return np.stack(res, 1).astype(float)


def test_road_equals_quantus_2d():
    from trustmap.metrics import Masking
    from trustmap.metrics.road import NEIGHBOURS, road

    rng = np.random.default_rng(2)
    net = small_cnn2d(c=2)
    X = rng.normal(size=(6, 2, 8, 8)).astype(np.float32)
    y = load_model(net).predict(X)
    pos = rng.normal(size=(6, 1, 8, 8))
    maps = np.repeat(pos, 2, axis=1)                       # one value per position, as Quantus' channel-summed maps
    pct = [5, 25, 50, 75, 95]
    res = road(net, X, maps, percentages=pct, noise=0.0, target=y, masking=Masking(channels="mean"))
    want = quantus_road(net, X, y, pos, pct, NEIGHBOURS[2])
    np.testing.assert_allclose(res.extras["curves"], want, atol=1e-6)
    np.testing.assert_allclose(res.per_sample, want.mean(1), atol=1e-6)


# ---- regions: Selectivity, RegionPerturbation (grid), IROF ------------------------------------------------
def quantus_selectivity(net, X, y, a, patch):
    out = []
    for x, t, m in zip(X, y, a):
        starts = list(range(0, x.shape[-1], patch))
        sums = [m[:, s:s + patch].sum() for s in starts]
        xp = x.copy()
        curve = []
        for k in np.argsort(-np.asarray(sums), kind="stable"):
            xp[:, starts[k]:starts[k] + patch] = 0.0
            curve.append(torch.softmax(net(torch.as_tensor(xp[None])), 1)[0, t].item())
        out.append(np.trapezoid(np.array(curve), dx=1.0))
    return np.array(out)


def quantus_region_perturbation(net, X, y, a, patch, regions):
    out = []
    for x, t, m in zip(X, y, a):
        p0 = torch.softmax(net(torch.as_tensor(x[None])), 1)[0, t].item()
        starts = list(range(0, x.shape[-1], patch))
        sums = [m[:, s:s + patch].sum() for s in starts]
        xp = x.copy()
        drops = []
        for k in np.argsort(-np.asarray(sums), kind="stable")[:regions]:
            xp[:, starts[k]:starts[k] + patch] = 0.0
            drops.append(p0 - torch.softmax(net(torch.as_tensor(xp[None])), 1)[0, t].item())
        out.append(np.sum(drops) / (len(drops) + 1))
    return np.array(out)


def quantus_irof(net, X, y, a, size):
    out = []
    for x, t, m in zip(X, y, a):
        segments = np.arange(x.shape[-1]) // size
        y_pred = torch.softmax(net(torch.as_tensor(x[None])), 1)[0, t].item()
        att = np.array([np.mean(m[:, segments == s]) for s in range(segments.max() + 1)])
        xp = x.copy()
        preds = []
        for s in np.argsort(-att, kind="stable"):
            xp[:, segments == s] = 0.0
            preds.append(torch.softmax(net(torch.as_tensor(xp[None])), 1)[0, t].item() / y_pred)
        out.append(len(preds) - np.trapezoid(np.array(preds), dx=1.0))
    return np.array(out)


def test_region_metrics_equal_quantus(cnn_task):
    from trustmap.metrics.regions import irof, region_perturbation, selectivity

    net, X = cnn_task
    y = load_model(net).predict(X)
    a = np.abs(np.random.default_rng(5).normal(size=X.shape))
    np.testing.assert_allclose(selectivity(net, X, a, patch_size=5, target=y).per_sample,
                               quantus_selectivity(net, X, y, a, 5), atol=1e-6)
    np.testing.assert_allclose(region_perturbation(net, X, a, patch_size=4, regions=3, target=y).per_sample,
                               quantus_region_perturbation(net, X, y, a, 4, 3), atol=1e-6)
    np.testing.assert_allclose(irof(net, X, a, segment_size=3, target=y).per_sample,
                               quantus_irof(net, X, y, a, 3), atol=1e-6)


def test_irof_superpixels_2d():
    from trustmap.metrics.regions import irof

    rng = np.random.default_rng(0)
    net = small_cnn2d(c=1, hw=12)
    X = rng.random(size=(3, 1, 12, 12)).astype(np.float32)
    res = irof(net, X, rng.normal(size=X.shape))
    assert np.isfinite(res.per_sample).all() and (res.extras["segments"] > 1).all()


# ---- axiomatic / correlation: Completeness, MonotonicityCorrelation, Infidelity, NonSensitivity -------------
def quantus_monotonicity_correlation(net, X, y, a, eps=1e-5):
    out = []
    for x, t, m in zip(X, y, a):
        prob = lambda z: torch.softmax(net(torch.as_tensor(z[None], dtype=torch.float32)), 1)[0, t].item()  # noqa
        y_pred = prob(x)
        inv_pred = (1.0 if np.abs(y_pred) < eps else 1.0 / np.abs(y_pred)) ** 2
        flat = m.reshape(-1)
        atts, vars_ = [], []
        for ix in np.argsort(flat, kind="stable"):
            xp = x.reshape(-1).copy()
            xp[ix] = 0.0
            vars_.append(float(np.mean((np.array([prob(xp.reshape(x.shape))]) - np.array(y_pred)) ** 2) * inv_pred))
            atts.append(float(flat[ix]))
        out.append(scipy.stats.spearmanr(atts, vars_)[0])
    return np.array(out)


def test_monotonicity_correlation_and_completeness_equal_quantus(cnn_task):
    from trustmap.metrics.axiomatic import completeness, monotonicity_correlation

    net, X = cnn_task
    X = X[:5]
    y = load_model(net).predict(X)
    a = np.abs(np.random.default_rng(5).normal(size=X.shape))
    np.testing.assert_allclose(monotonicity_correlation(net, X, a, target=y).per_sample,
                               quantus_monotonicity_correlation(net, X, y, a), atol=1e-6)
    # completeness: |sum(a) - (f(x) - f(0))| on logits
    logits = lambda z: net(torch.as_tensor(z, dtype=torch.float32)).detach().double().numpy()  # noqa
    want = np.abs(a.reshape(5, -1).sum(1) - (logits(X)[np.arange(5), y] - logits(np.zeros_like(X))[np.arange(5), y]))
    np.testing.assert_allclose(completeness(net, X, a, target=y).per_sample, want, rtol=1e-6)


def captum_infidelity(net, X, y, a, draws, normalize=False):
    out = []
    for x, t, m, d in zip(X, y, a, draws):
        f = lambda z: net(torch.as_tensor(z, dtype=torch.float32)).detach().double().numpy()[:, t]  # noqa
        xp = (x[None].astype(np.float64) - d).astype(np.float32)
        pert = x[None].astype(np.float64) - xp
        ia = (pert.reshape(len(d), -1) * m.reshape(1, -1)).sum(1)
        diff = f(x[None]) - f(xp)
        beta = (ia * diff).mean() / (ia * ia).mean() if normalize else 1.0
        out.append(np.mean((beta * ia - diff) ** 2))
    return np.array(out)


def test_infidelity_equals_captum_with_the_same_draws(cnn_task):
    from trustmap.metrics.axiomatic import infidelity

    net, X = cnn_task
    y = load_model(net).predict(X)
    a = np.random.default_rng(5).normal(size=X.shape)
    rng = np.random.default_rng(4)
    draws = [rng.normal(0, 0.1, size=(7,) + X.shape[1:]) for _ in range(len(X))]
    for norm in (False, True):
        got = infidelity(net, X, a, n_samples=7, std=0.1, seed=4, target=y, normalize=norm).per_sample
        np.testing.assert_allclose(got, captum_infidelity(net, X, y, a, draws, norm), rtol=1e-6, atol=1e-9)


def test_axiomatic_known_answers():
    """A linear model, logits w.x: the map w*x is complete (gap 0), the map w has infidelity 0; the
    map w*x is non-sensitive-consistent where w = 0; random and reversed maps do worse."""
    from trustmap.metrics.axiomatic import completeness, infidelity, non_sensitivity

    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 1, 12)).astype(np.float32)
    W[:, :, :4] = 0.0
    net = linear_net(W)
    X = rng.normal(size=(8, 1, 12)).astype(np.float32)
    t = np.ones(8, int)
    oracle = W[1][None] * X
    random = rng.normal(size=X.shape)
    gaps = [completeness(net, X, m, target=t).value for m in (oracle, random, -oracle)]
    assert gaps[0] < 1e-5 < gaps[1] and gaps[0] < gaps[2]
    w_map = np.broadcast_to(W[1][None], X.shape)
    inf = [infidelity(net, X, m, target=t).value for m in (w_map, random, -w_map)]
    assert inf[0] < 1e-8 and inf[0] < inf[1] < inf[2]
    ns = [non_sensitivity(net, X, m, target=t, n_samples=4, output="logit").value for m in (oracle, random)]
    assert ns[0] == 0 and ns[1] >= 4       # random maps are nonzero where the model ignores the input


# ---- the known-answer task: oracle, random and reversed maps through trustmap.evaluate --------------------
def region_task():
    """Logits depend on positions 16..26 only (two random filters); labels noisy."""
    rng = np.random.default_rng(0)
    w = np.zeros((2, 1, 48), dtype=np.float32)
    w[:, 0, 16:26] = rng.normal(size=(2, 10)) * 2
    net = linear_net(w)
    X = rng.normal(size=(120, 1, 48)).astype(np.float32)
    z = np.einsum("kcl,ncl->nk", w, X)
    y = (z[:, 1] - z[:, 0] + rng.normal(scale=2.0, size=120) > 0).astype(np.int64)
    oracle = (w[y] - w[1 - y]) * X
    attrs = {"oracle": Attribution(oracle, y, "oracle", layout="NCL"),
             "random": Attribution(rng.normal(size=X.shape), y, "random", layout="NCL"),
             "reversed": Attribution(-oracle, y, "reversed", layout="NCL")}
    return net, X, y, attrs


def test_new_metrics_order_oracle_random_reversed():
    from trustmap.metrics import METRICS, evaluate_explanations

    net, X, y, attrs = region_task()
    ordered = ["road_morf", "road_lerf", "selectivity", "region_perturbation", "irof", "monotonicity_correlation",
               "completeness"]
    sign_blind = ["non_sensitivity", "sparseness", "complexity", "effective_complexity"]
    pct = {"percentages": [10, 30, 50, 70, 90], "output": "prob"}
    s = evaluate_explanations(net, X, y, attrs, ordered + sign_blind, n_boot=200, n_perm=200,
                              metric_params={"road_morf": pct, "road_lerf": pct, "selectivity": {"patch_size": 4},
                                             "region_perturbation": {"patch_size": 4, "regions": 6},
                                             "irof": {"segment_size": 4},
                                             "non_sensitivity": {"n_samples": 3, "output": "logit"}})
    for met in ordered:
        o, r, v = (s.value(k, met) for k in ("oracle", "random", "reversed"))
        assert ((o > r > v) if METRICS[met].higher_is_better else (o < r < v)), (met, o, r, v)
    # these do not see the sign: the oracle and its negative tie, and both beat noise
    for met in sign_blind:
        o, r, v = (s.value(k, met) for k in ("oracle", "random", "reversed"))
        assert o == pytest.approx(v) and ((o > r) if METRICS[met].higher_is_better else (o < r)), met
    assert s.comparison("road_morf", "oracle", "random")["better"] == "oracle"


def test_evaluate_runs_robustness_metrics_from_the_table(cnn_task):
    from trustmap.metrics import evaluate_explanations

    net, X = cnn_task
    attr = get_explainer("saliency", absolute=False, times_input=True).explain(net, X)
    kw = {"n_samples": 4}
    s = evaluate_explanations(net, X, None, {"gxi": attr, "array": attr.maps},
                              ["max_sensitivity", "avg_sensitivity", "local_lipschitz", "random_logit"],
                              n_boot=100, n_perm=100, metric_params={"max_sensitivity": kw, "local_lipschitz": kw})
    direct = R.max_sensitivity(net, X, attr, n_samples=4, seed=0)
    assert s.value("gxi", "max_sensitivity") == pytest.approx(direct.value)
    assert np.isnan(s.value("array", "max_sensitivity"))          # a bare array cannot be re-explained
    assert any("array" in n and "re-runnable" in n for n in s.settings["notes"])
    with pytest.raises(InputError):
        evaluate_explanations(net, X, None, {"gxi": attr}, ["sparseness"], n_boot=100, n_perm=100,
                              metric_params={"road_morf": {}})


def test_cli_scores_new_metrics_on_a_keras_file(tmp_path, capsys):
    """`trustmap explain` then `trustmap evaluate --metrics ...` on a channels-last .keras file and an .npz."""
    import json

    from trustmap.cli import main
    from trustmap.metrics import selectivity, sparseness
    from trustmap.models import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((24, 1)), keras.layers.Conv1D(4, 5, padding="same", activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    net.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 24, 1)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=rng.integers(0, 3, 16))
    expl, out = tmp_path / "expl", tmp_path / "scores"
    assert main(["explain", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                 "--method", "saliency", "--out", str(expl), "--json"]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                 "--explanations", str(expl), "--metrics", "sparseness,selectivity,max_sensitivity",
                 "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    table = json.loads((out / "scores.json").read_text())
    att = Attribution.load(expl / "saliency.npz")
    assert table["cells"]["saliency"]["sparseness"]["value"] == pytest.approx(sparseness(att).value, abs=1e-12)
    assert table["cells"]["saliency"]["selectivity"]["value"] == pytest.approx(
        selectivity(tmp_path / "m.keras", X, att).value, abs=1e-9)
    assert np.isfinite(table["cells"]["saliency"]["max_sensitivity"]["value"])
    assert main(["evaluate", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                 "--explanations", str(expl), "--metrics", "sparsenes", "--out", str(out)]) == 2
    assert "sparseness" in capsys.readouterr().err
