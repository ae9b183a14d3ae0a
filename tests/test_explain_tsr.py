"""Temporal saliency rescaling against a loop of the reference algorithm (Ismail et al. 2020's
getTwoStepRescaling with a zero assignment), over gradient and perturbation bases."""

import numpy as np
import pytest
import torch
from torch import nn

from trustmap.explain import explain


def minmax(v):
    rng = v.max() - v.min()
    return (v - v.min()) / rng if rng > 0 else np.zeros_like(v)


def reference_tsr(net, x, target, base, params, q=0.55):
    out = np.zeros_like(x)
    for i in range(len(x)):
        xi = x[i:i + 1]
        R = explain(net, xi, base, target=target, **params).maps
        c, T = xi.shape[1:]
        tg = np.zeros(T)
        for t in range(T):
            m = xi.copy()
            m[:, :, t] = 0
            tg[t] = np.abs(R - explain(net, m, base, target=target, **params).maps).sum()
        tc = minmax(tg)
        thr = np.quantile(tc, q)
        for t in range(T):
            if tc[t] > thr:
                fg = np.zeros(c)
                for ch in range(c):
                    m = xi.copy()
                    m[:, ch, t] = 0
                    fg[ch] = np.abs(R - explain(net, m, base, target=target, **params).maps).sum()
                fc = minmax(fg)
            else:
                fc = np.full(c, 0.1)
            out[i, :, t] = tc[t] * fc
    return out


@pytest.mark.parametrize("base, params", [("saliency", {}), ("occlusion", {"window": 2}),
                                          ("integrated_gradients", {"n_steps": 4})])
def test_tsr_equals_the_reference_loop(base, params):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(40, 2)).eval()
    x = np.random.default_rng(0).normal(size=(3, 3, 10)).astype("float32")
    a = explain(net, x, "tsr", target=1, base=base, base_params=params)
    want = reference_tsr(net, x, 1, base, params)
    np.testing.assert_allclose(a.maps, want, atol=1e-5, rtol=1e-4)
    assert a.extras["selected"].sum(1).min() >= 1


def test_tsr_windows_cover_each_step_and_2d_works():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 2)).eval()
    x = np.random.default_rng(1).normal(size=(2, 2, 6, 6)).astype("float32")
    a = explain(net, x, "tsr", window=(2, 3))
    assert a.maps.shape == x.shape and a.extras["n_windows"] == 6 and (a.maps >= 0).all()
    # constant inside each window
    blk = a.maps.reshape(2, 2, 3, 2, 2, 3)
    np.testing.assert_allclose(blk, np.broadcast_to(blk[:, :, :, :1, :, :1], blk.shape), atol=1e-7)
