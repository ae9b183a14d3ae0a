"""LRP against a reference written out per layer with Zennit's rule definitions (unfolded patches,
explicit sums; BatchNorm folded by hand), conservation, composites, and the Keras refusal."""

import numpy as np
import pytest
import torch
from torch import nn

from trustmap.errors import UnsupportedError
from trustmap.explain import explain
from trustmap.models import import_keras


def stab(z, eps=1e-6):
    return z + ((z == 0).to(z) + z.sign()) * eps


def conv_patches(x, k, pad):
    """(N, C, Lo, K) patches of a stride-1 conv1d."""
    xp = torch.nn.functional.pad(x, (pad, pad))
    return xp.unfold(2, k, 1)


def fold(rp, length, pad):
    """Scatter patch relevance (N, C, Lo, K) back onto the input positions (padding dropped)."""
    n, c, lo, k = rp.shape
    out = torch.zeros(n, c, length + 2 * pad, dtype=rp.dtype)
    for j in range(k):
        out[:, :, j:j + lo] += rp[:, :, :, j]
    return out[:, :, pad:pad + length]


def rule_patches(rule, P, W, b, R, eps, gamma, alpha, beta):
    """Relevance of patch entries ``P (N, C, Lo, K)`` for ``z = Σ P·W + b``, ``W (O, C, K)``."""
    def spread(P_, W_, b_, R_):
        z = torch.einsum("nclk,ock->nol", P_, W_) + (0 if b_ is None else b_[None, :, None])
        return P_ * torch.einsum("nol,ock->nclk", R_ / stab(z, eps if rule == "epsilon" else 1e-6), W_)

    if rule == "epsilon":
        return spread(P, W, b, R)
    if rule == "gamma":
        return spread(P, W + gamma * W.clamp(min=0), b + gamma * b.clamp(min=0), R)
    if rule == "flat":  # P holds ones where the input is (zeros in the padding), W ones, no bias
        ones, wo = (P != 0).to(P), torch.ones_like(W)
        z = torch.einsum("nclk,ock->nol", ones, wo)
        return ones * torch.einsum("nol,ock->nclk", R / stab(z), wo)
    a, bt = (alpha, beta) if rule == "alpha_beta" else (1.0, 0.0)
    Pp, Pn, Wp, Wn = P.clamp(min=0), P.clamp(max=0), W.clamp(min=0), W.clamp(max=0)
    zp = torch.einsum("nclk,ock->nol", Pp, Wp) + torch.einsum("nclk,ock->nol", Pn, Wn) + b.clamp(min=0)[None, :, None]
    zn = torch.einsum("nclk,ock->nol", Pp, Wn) + torch.einsum("nclk,ock->nol", Pn, Wp) + b.clamp(max=0)[None, :, None]
    sp, sn = R / stab(zp), R / stab(zn)
    pos = Pp * torch.einsum("nol,ock->nclk", sp, Wp) + Pn * torch.einsum("nol,ock->nclk", sp, Wn)
    neg = Pp * torch.einsum("nol,ock->nclk", sn, Wn) + Pn * torch.einsum("nol,ock->nclk", sn, Wp)
    return a * pos - bt * neg


def reference_lrp(net, x, tg, composite, eps=1e-6, gamma=0.25, alpha=2.0, beta=1.0):
    # fold BatchNorm into the conv before it, by hand
    layers = []
    for m in net:
        if isinstance(m, nn.BatchNorm1d):
            conv = layers[-1]
            s = m.weight / torch.sqrt(m.running_var + m.eps)
            layers[-1] = ("conv", conv[1] * s[:, None, None], (conv[2] - m.running_mean) * s + m.bias, conv[3])
        elif isinstance(m, nn.Conv1d):
            layers.append(("conv", m.weight.detach(), m.bias.detach(), m.padding[0]))
        elif isinstance(m, nn.Linear):
            layers.append(("dense", m.weight.detach()[:, :, None], m.bias.detach(), 0))
        else:
            layers.append(("other", m))
    layers = [(k, *(t.detach() if isinstance(t, torch.Tensor) else t for t in rest)) for k, *rest in layers]
    acts = [x]
    for L in layers:
        a = acts[-1]
        if L[0] == "conv":
            acts.append(torch.nn.functional.conv1d(a, L[1], L[2], padding=L[3]))
        elif L[0] == "dense":
            acts.append(a @ L[1][:, :, 0].T + L[2])
        else:
            acts.append(L[1](a))
    out = acts[-1]
    R = torch.zeros_like(out)
    R[torch.arange(len(out)), tg] = out[torch.arange(len(out)), tg]
    n_lin = [i for i, L in enumerate(layers) if L[0] in ("conv", "dense")]
    for i in reversed(range(len(layers))):
        L, a = layers[i], acts[i]
        if L[0] in ("conv", "dense"):
            first = i == n_lin[0]
            dense = L[0] == "dense"
            if composite == "epsilon" or dense:
                rule = "flat" if composite == "epsilon_plus_flat" and first else "epsilon"
            else:
                rule = {"gamma": "gamma", "alpha_beta": "alpha_beta"}.get(composite, "flat" if first else "zplus")
            if dense:
                P = a[:, :, None, None]  # (N, C, 1, 1)
                rp = rule_patches(rule, P, L[1], L[2], R[:, :, None], eps, gamma, alpha, beta)
                R = rp[:, :, 0, 0]
            else:
                k = L[1].shape[-1]
                P = conv_patches(torch.ones_like(a) if rule == "flat" else a, k, L[3])
                rp = rule_patches(rule, P, L[1], L[2], R, eps, gamma, alpha, beta)
                R = fold(rp, a.shape[-1], L[3])
        elif isinstance(L[1], nn.AvgPool1d):  # norm rule over pairs
            z = acts[i + 1]
            R = a * (R / stab(z) / 2).repeat_interleave(2, -1)
        elif isinstance(L[1], nn.MaxPool1d):  # winner takes all
            idx = a.view(*a.shape[:2], -1, 2).argmax(-1)
            Rn = torch.zeros(*a.shape[:2], a.shape[-1] // 2, 2, dtype=R.dtype)
            Rn.scatter_(-1, idx[..., None], R[..., None])
            R = Rn.view_as(a)
        elif isinstance(L[1], nn.Flatten):
            R = R.view_as(a)
        # activations: pass
    return R, out[torch.arange(len(out)), tg]


def net1d(bias=True, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, bias=bias), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(2),
                        nn.Conv1d(4, 4, 3, padding=1, bias=bias), nn.Tanh(), nn.AvgPool1d(2), nn.Flatten(),
                        nn.Linear(16, 6, bias=bias), nn.ReLU(inplace=True), nn.Linear(6, 3, bias=bias))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 1.5)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.2, 0.2)
        if not bias:
            net[1].bias.zero_()
            net[1].running_mean.zero_()
    return net.eval()


@pytest.mark.parametrize("composite", ["epsilon", "gamma", "alpha_beta", "epsilon_plus_flat"])
def test_lrp_equals_zennit_rules_layer_by_layer(composite):
    net = net1d()
    x = np.random.default_rng(0).normal(size=(5, 2, 16)).astype("float32")
    tg = np.array([0, 1, 2, 0, 1])
    want, score = reference_lrp(net, torch.as_tensor(x), torch.as_tensor(tg), composite, eps=1e-3 if
                                composite == "epsilon" else 1e-6)
    a = explain(net, x, "lrp", target=tg, composite=composite, epsilon=1e-3 if composite == "epsilon" else 1e-6)
    np.testing.assert_allclose(a.maps, want.detach().numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(a.extras["score"], score.detach().numpy(), atol=1e-5)
    assert a.extras["layers_with_rules"] == 4  # BN folded into the first conv


@pytest.mark.parametrize("composite", ["epsilon", "alpha_beta", "epsilon_plus_flat"])
@pytest.mark.parametrize("rank", [1, 2])
def test_lrp_conserves_relevance_without_biases(composite, rank):
    torch.manual_seed(1)
    conv, pool = (nn.Conv1d, nn.AvgPool1d) if rank == 1 else (nn.Conv2d, nn.AvgPool2d)
    net = nn.Sequential(conv(3, 6, 3, padding=1, bias=False), nn.ReLU(), pool(2), conv(6, 6, 3, padding=1, bias=False),
                        nn.ReLU(), nn.Flatten(), nn.Linear(6 * (8 if rank == 1 else 16), 3, bias=False)).eval()
    shape = (4, 3, 16) if rank == 1 else (4, 3, 8, 8)
    x = np.abs(np.random.default_rng(2).normal(size=shape)).astype("float32")
    a = explain(net, x, "lrp", composite=composite)
    np.testing.assert_allclose(a.extras["relevance_sum"], a.extras["score"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a.maps.reshape(4, -1).sum(1), a.extras["score"], rtol=1e-3, atol=1e-5)
    # the composites differ
    b = explain(net, x, "lrp", composite="gamma" if composite != "gamma" else "epsilon")
    assert not np.allclose(a.maps, b.maps, atol=1e-4)


def test_lrp_epsilon_on_relu_net_equals_input_times_gradient():
    # LRP-0 (tiny eps) on a bias-free ReLU network is gradient x input (Ancona et al., 2018)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2, bias=False), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 20, 2, bias=False)).eval()
    x = np.random.default_rng(4).normal(size=(3, 1, 20)).astype("float32")
    a = explain(net, x, "lrp", composite="epsilon", epsilon=1e-9, target=1)
    b = explain(net, x, "input_x_gradient", target=1)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-4, rtol=1e-3)


def test_lrp_refuses_keras_with_a_fix():
    keras = import_keras()
    km = keras.Sequential([keras.Input((16, 2)), keras.layers.Conv1D(3, 3, activation="relu"),
                           keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(UnsupportedError, match="PyTorch"):
        explain(km, np.zeros((2, 16, 2), "float32"), "lrp")
    with pytest.raises(ValueError, match="composite"):
        explain(net1d(), np.zeros((2, 2, 16), "float32"), "lrp", composite="zplus_box")
