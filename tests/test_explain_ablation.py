"""Feature ablation against Captum's definition written as a loop; Shapley value sampling: efficiency,
convergence to the exact (enumerated) Shapley values, user masks, superpixels, batching."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from trustmap.explain import explain


def small_net(c=2, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(c, 4, 3, padding=1), nn.Tanh(), nn.Conv1d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 16, 3)).eval()


def scores(net, x, tg):
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float32))[np.arange(len(x)), tg].double().numpy()


def test_feature_ablation_equals_captum_loop():
    net = small_net()
    x = np.random.default_rng(0).normal(size=(3, 2, 16)).astype("float32")
    tg = np.array([0, 2, 1])
    mask = np.repeat(np.arange(8), 2)  # 8 features of 2 positions, all channels together
    a = explain(net, x, "feature_ablation", target=tg, segmentation=mask, baseline=0.5)
    want = np.zeros_like(x)
    f0 = scores(net, x, tg)
    for f in range(8):  # Captum: attr[mask == f] = f(x) - f(x with feature f set to the baseline)
        xa = x.copy()
        xa[:, :, mask == f] = 0.5
        want[:, :, mask == f] = (f0 - scores(net, xa, tg))[:, None, None]
    np.testing.assert_allclose(a.maps, want, atol=1e-5)
    # per channel: 16 features
    b = explain(net, x, "feature_ablation", target=tg, segmentation=mask, per_channel=True)
    for c in range(2):
        xa = x.copy()
        xa[:, c, mask == 3] = 0.0
        np.testing.assert_allclose(b.maps[:, c, mask == 3], np.repeat((f0 - scores(net, xa, tg))[:, None], 2, 1),
                                   atol=1e-5)


def exact_shapley(net, x, base, tg, labels, n_feat):
    out = np.zeros((len(x), n_feat))
    for f in range(n_feat):
        others = [g for g in range(n_feat) if g != f]
        for k in range(n_feat):
            for S in itertools.combinations(others, k):
                w = math.factorial(k) * math.factorial(n_feat - k - 1) / math.factorial(n_feat)
                on = np.isin(labels, S)
                x0 = np.where(on, x, base)
                x1 = np.where(on | (labels == f), x, base)
                out[:, f] += w * (scores(net, x1, tg) - scores(net, x0, tg))
    return out


def test_shapley_sampling_is_efficient_and_converges_to_exact_values():
    net = small_net()
    x = np.random.default_rng(1).normal(size=(2, 2, 16)).astype("float32")
    tg = np.array([1, 0])
    mask = np.repeat(np.arange(8), 2)
    exact = exact_shapley(net, x, np.zeros_like(x), tg, np.broadcast_to(mask, x.shape), 8)
    errs = []
    for n_perm in (4, 64, 1024):
        a = explain(net, x, "shapley_sampling", target=tg, segmentation=mask, n_permutations=n_perm, seed=0)
        phi = a.extras["coefficients"]
        # efficiency holds for any number of permutations
        np.testing.assert_allclose(phi.sum(1), a.extras["score"] - a.extras["baseline_score"], atol=1e-5)
        errs.append(np.abs(phi - exact).max())
    assert errs[2] < errs[0] and errs[2] < 0.03 * np.abs(exact).max()
    # the maps copy each feature's value onto its entries
    np.testing.assert_allclose(a.maps[:, :, mask == 5], np.broadcast_to(phi[:, 5, None, None], (2, 2, 2)), atol=1e-6)


def test_shapley_sampling_on_superpixels_batch_invariant():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 64, 2)).eval()
    x = np.random.default_rng(3).random((3, 1, 8, 8)).astype("float32")
    a = explain(net, x, "shapley_sampling", n_permutations=3, segmentation="slic",
                segment_params={"n_segments": 6})
    one = np.concatenate([explain(net, x[i:i + 1], "shapley_sampling", n_permutations=3, segmentation="slic",
                                  segment_params={"n_segments": 6}).maps for i in range(3)])
    np.testing.assert_allclose(one, a.maps, atol=1e-5)
    phi = a.extras["coefficients"]
    np.testing.assert_allclose(np.nansum(phi, 1), a.extras["score"] - a.extras["baseline_score"], atol=1e-5)
