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
from trustmap.metrics import complexity as C
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
