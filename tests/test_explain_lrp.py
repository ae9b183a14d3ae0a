"""LRP against a reference written out per layer with Zennit's rule definitions (unfolded patches,
explicit sums; BatchNorm folded by hand), conservation, composites, and Keras models (saved .keras/.h5) against their torch twin."""

import numpy as np
import pytest
import torch
from torch import nn

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
    if rule == "gamma":  # Zennit 0.5's generalized gamma: split by the sign of z and of the inputs
        z = torch.einsum("nclk,ock->nol", P, W) + b[None, :, None]
        Pp, Pn = P.clamp(min=0), P.clamp(max=0)
        Wgp, Wgn = W + gamma * W.clamp(min=0), W + gamma * W.clamp(max=0)
        out = 0
        for mask, (Wa, Wb), bb in (((z > 0), (Wgp, Wgn), b + gamma * b.clamp(min=0)),
                                   ((z < 0), (Wgn, Wgp), b + gamma * b.clamp(max=0))):
            zz = (torch.einsum("nclk,ock->nol", Pp, Wa) + torch.einsum("nclk,ock->nol", Pn, Wb)
                  + bb[None, :, None])
            s = mask.to(R) * R / stab(zz)
            out = out + Pp * torch.einsum("nol,ock->nclk", s, Wa) + Pn * torch.einsum("nol,ock->nclk", s, Wb)
        return out
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


def keras_twin_1d(keras, bias=True):
    """net1d's layers in Keras (channels last, fused activations, BatchNormalization, pooling, Flatten)."""
    L = keras.layers
    return keras.Sequential([keras.Input((16, 2)), L.Conv1D(4, 3, padding="same", use_bias=bias), L.BatchNormalization(),
                             L.Activation("relu"), L.MaxPooling1D(2),
                             L.Conv1D(4, 3, padding="same", activation="tanh", use_bias=bias), L.AveragePooling1D(2),
                             L.Flatten(), L.Dense(6, activation="relu", use_bias=bias),
                             L.Dense(3, activation="softmax", use_bias=bias)])


def copy_keras_to_net1d(km, net):
    """Copy the Keras weights into net1d (BatchNorm eps 1e-3 as Keras'; Flatten order (L, C) -> (C, L))."""
    conv1, bn, conv2, d1, d2 = (km.layers[i] for i in (0, 1, 4, 7, 8))
    with torch.no_grad():
        for tconv, kconv in ((net[0], conv1), (net[4], conv2)):
            w = kconv.get_weights()
            tconv.weight.copy_(torch.as_tensor(np.transpose(w[0], (2, 1, 0))))  # (k, in, out) -> (out, in, k)
            if len(w) > 1:
                tconv.bias.copy_(torch.as_tensor(w[1]))
        g, b, mu, var = bn.get_weights()
        net[1].weight.copy_(torch.as_tensor(g))
        net[1].bias.copy_(torch.as_tensor(b))
        net[1].running_mean.copy_(torch.as_tensor(mu))
        net[1].running_var.copy_(torch.as_tensor(var))
        net[1].eps = bn.epsilon
        k = d1.get_weights()
        net[8].weight.copy_(torch.as_tensor(k[0].reshape(4, 4, 6).transpose(2, 1, 0).reshape(6, 16)))
        k2 = d2.get_weights()
        net[10].weight.copy_(torch.as_tensor(k2[0].T))
        if len(k) > 1:
            net[8].bias.copy_(torch.as_tensor(k[1]))
            net[10].bias.copy_(torch.as_tensor(k2[1]))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lrp_on_saved_keras_models_equals_the_torch_twin(tmp_path, suffix):
    from trustmap.models import load_model

    keras = import_keras()
    keras.utils.set_random_seed(5)
    km = keras_twin_1d(keras)
    rng = np.random.default_rng(1)
    bn = km.layers[1]
    bn.set_weights([rng.uniform(0.5, 1.5, 4).astype("float32"), rng.uniform(-0.2, 0.2, 4).astype("float32"),
                    rng.uniform(-0.3, 0.3, 4).astype("float32"), rng.uniform(0.5, 1.5, 4).astype("float32")])
    for layer in (km.layers[0], km.layers[4], km.layers[7], km.layers[8]):  # non-zero biases
        w = layer.get_weights()
        layer.set_weights([w[0], rng.uniform(-0.2, 0.2, w[1].shape).astype("float32")])
    path = tmp_path / f"m{suffix}"
    km.save(path)
    model = load_model(str(path))
    net = net1d()
    copy_keras_to_net1d(km, net)
    x = rng.normal(size=(5, 16, 2)).astype("float32")  # channels last, as the Keras model reads it
    xt = np.moveaxis(x, -1, 1)
    tg = np.array([0, 1, 2, 0, 1])
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.as_tensor(xt)).numpy(), model.logits(x) if hasattr(model, "logits")
                                   else net(torch.as_tensor(xt)).numpy(), atol=1e-4)
    for composite in COMPOSITES_ALL:
        eps = 1e-3 if composite == "epsilon" else 1e-6
        ak = explain(model, x, "lrp", target=tg, composite=composite, epsilon=eps)
        at = explain(net, xt, "lrp", target=tg, composite=composite, epsilon=eps)
        want, score = reference_lrp(net, torch.as_tensor(xt), torch.as_tensor(tg), composite, eps=eps)
        np.testing.assert_allclose(at.maps, want.detach().numpy(), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(np.moveaxis(ak.maps, -1, 1), at.maps, atol=1e-5, rtol=1e-4, err_msg=composite)
        np.testing.assert_allclose(ak.extras["score"], at.extras["score"], atol=1e-5)
        assert ak.extras["layers_with_rules"] == 4  # BatchNormalization folded into the first Conv1D


COMPOSITES_ALL = ["epsilon", "gamma", "alpha_beta", "epsilon_plus_flat"]


@pytest.mark.parametrize("composite", ["epsilon", "alpha_beta", "epsilon_plus_flat"])
def test_lrp_on_a_keras_2d_model_equals_its_twin_and_conserves(composite, tmp_path):
    from trustmap.models import load_model

    keras = import_keras()
    keras.utils.set_random_seed(2)
    L = keras.layers
    km = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(4, 3, activation="relu", use_bias=False),
                           L.Conv2D(5, 3, padding="same", activation="relu", use_bias=False),
                           L.GlobalAveragePooling2D(), L.Dense(3, use_bias=False)])
    tw = nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1, bias=False),
                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3, bias=False)).eval()
    with torch.no_grad():
        tw[0].weight.copy_(torch.as_tensor(np.transpose(km.layers[0].get_weights()[0], (3, 2, 0, 1))))
        tw[2].weight.copy_(torch.as_tensor(np.transpose(km.layers[1].get_weights()[0], (3, 2, 0, 1))))
        tw[6].weight.copy_(torch.as_tensor(km.layers[3].get_weights()[0].T))
    x = np.abs(np.random.default_rng(3).normal(size=(4, 8, 8, 2))).astype("float32")
    km.save(tmp_path / "m2d.keras")
    a = explain(load_model(str(tmp_path / "m2d.keras")), x, "lrp", composite=composite, target=1)
    if composite != "alpha_beta":  # (αβ conserves only where each output has negative contributions too)
        np.testing.assert_allclose(a.maps.reshape(4, -1).sum(1), a.extras["score"], rtol=1e-3, atol=1e-5)
    b = explain(tw, np.moveaxis(x, -1, 1), "lrp", composite=composite, target=1)
    np.testing.assert_allclose(np.moveaxis(a.maps, -1, 1), b.maps, atol=1e-5, rtol=1e-4)
    assert a.extras["layers_with_rules"] == 3


def test_lrp_refuses_a_bad_composite():
    with pytest.raises(ValueError, match="composite"):
        explain(net1d(), np.zeros((2, 2, 16), "float32"), "lrp", composite="zplus_box")


@pytest.mark.parametrize("composite", ["gamma", "alpha_beta"])
def test_lrp_grouped_convolutions_conserve_relevance(composite):
    """γ and αβ on grouped (and depthwise) convolutions, signed inputs: each group's two weight sets go
    through their own transposed products; the maps equal those of the same net with dense block-diagonal
    weights, and bias-free γ layers pass the logit on whole (αβ does not where a unit has no negative part)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1, groups=2, bias=False), nn.ReLU(),
                        nn.Conv1d(8, 8, 3, padding=1, groups=8, bias=False), nn.ReLU(),
                        nn.Conv1d(8, 6, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 10, 3, bias=False)).eval()
    x = np.random.default_rng(1).normal(size=(6, 4, 12)).astype("float32")
    a = explain(net, x, "lrp", composite=composite)
    if composite == "gamma":
        np.testing.assert_allclose(a.extras["relevance_sum"], a.extras["score"], rtol=1e-4, atol=1e-5)
    # the same net with the grouped layers written as dense block-diagonal convolutions: the same maps
    dense = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1, bias=False),
                          nn.ReLU(), nn.Conv1d(8, 6, 3, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 10, 3, bias=False)).eval()
    with torch.no_grad():
        for d, g in zip(dense, net):
            if isinstance(d, nn.Conv1d):
                groups, w = g.groups, g.weight
                d.weight.zero_()
                o, i = w.shape[0] // groups, w.shape[1]
                for k in range(groups):
                    d.weight[k * o:(k + 1) * o, k * i:(k + 1) * i] = w[k * o:(k + 1) * o]
            elif isinstance(d, nn.Linear):
                d.weight.copy_(g.weight)
    b = explain(dense, x, "lrp", composite=composite, target=a.targets)
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_stabilizer_equals_the_where_form_bit_for_bit(dtype):
    """``stabilize`` (copysign form) gives ``torch.where(z >= 0, eps, -eps) + z`` exactly: both zeros get
    +eps, NaN and ±Inf pass, eps rounded as the scalar form rounds it, whatever the dtype."""
    from trustmap.explain.lrp import stabilize

    z = torch.randn(4, 3, 17, generator=torch.Generator().manual_seed(0)).to(dtype)
    z.view(-1)[:8] = torch.tensor([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e-7, -1e-7, -1e-6])
    for eps in (1e-6, 0.25, 0.0):
        want = torch.where(z >= 0, eps, -eps).to(z.dtype).add_(z)
        got = stabilize(z, eps)
        assert got.dtype == want.dtype and got.shape == want.shape
        same = (got == want) | (got.isnan() & want.isnan())
        assert bool(same.all())
        assert torch.equal(torch.signbit(got[~got.isnan()]), torch.signbit(want[~want.isnan()]))
    assert torch.equal(z.view(-1)[1:2].signbit(), torch.tensor([True]))  # the input is not changed
