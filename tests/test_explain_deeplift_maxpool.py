"""DeepLIFT's max-pooling rules against reference loops written out layer by layer: Captum 0.9's
result (its hook order included: of two directly chained hooked modules the upper one passes its
plain gradient), the cross maximum (exact summation-to-delta for any reference) and the DeepLIFT
authors' gradient rule; 1D and 2D, DeepLIFT and DeepLIFT-SHAP, a Keras model against its torch twin."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trustmap.explain import explain
from trustmap.models import import_keras, load_model

EPS = 1e-10
HOOKED = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d)
POOLS = (nn.MaxPool1d, nn.MaxPool2d)


def run(layer, t):
    return layer(t.clone())  # in-place activations act on a copy


def vjp(layer, a, g):
    a = a.detach().requires_grad_(True)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(run(layer, a), a, g)
    return out


def halves(t):
    b = len(t) // 2
    return t[:b], t[b:]


def captum_maxpool(layer, inp, out, grad_out, grad_in):
    """Captum's ``maxpool`` on the batch ``[x; x_ref]``: ``grad_out · Δout`` split into the part where the
    input's maximum is larger (at the input's argmax) and the rest (at the reference's argmax, with the
    reference rows' gradient), unpooled, summed over the halves, over ``Δin``."""
    rank = inp.ndim - 2
    pool, unpool = (F.max_pool1d, F.max_unpool1d) if rank == 1 else (F.max_pool2d, F.max_unpool2d)
    o, o_ref = halves(out)
    xmax = torch.max(o, o_ref)
    delta_out = torch.cat([xmax - o_ref, o - xmax])
    _, idx = pool(inp, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode, True)
    u = unpool(grad_out * delta_out, idx, layer.kernel_size, layer.stride, layer.padding, list(inp.shape))
    u1, u2 = halves(u)
    din = torch.cat(2 * [halves(inp)[0] - halves(inp)[1]])
    # where |Δin| < eps Captum takes grad_input[0] (the first row's); each row's own is what it gives one
    # input at a time
    return torch.where(din.abs() < EPS, grad_in, torch.cat([u1 + u2, u1 + u2]) / din)


def rescale(inp, out, grad_out, grad_in):
    din = torch.cat(2 * [halves(inp)[0] - halves(inp)[1]])
    dout = torch.cat(2 * [halves(out)[0] - halves(out)[1]])
    return torch.where(din.abs() < EPS, grad_in, grad_out * dout / din)


def forward_both(net, x, ref, tg):
    """Each layer's activations on the batch ``[x; ref]`` and the one-hot gradient of both halves' target
    scores at the output."""
    acts = [torch.cat([x, ref])]
    for layer in net:
        acts.append(run(layer, acts[-1]).detach())
    g = torch.zeros_like(acts[-1])
    g[torch.arange(2 * len(x)), torch.cat([tg, tg])] = 1.0
    return acts, g


def captum_deeplift(net, x, ref, tg):
    """Captum's DeepLift on an ``nn.Sequential`` written out: the batch ``[x; ref]``, both halves'
    target scores backpropagated; each hooked module's rule gets the gradient that reached its output
    before the next module's hook replaced it (``a``), the gradient flowing on is the replaced one (``v``).
    A dropout in eval mode returns its input tensor itself: the modules around it hook the same tensor."""
    net = [layer for layer in net if not isinstance(layer, nn.Dropout)]
    b = len(x)
    acts, g = forward_both(net, x, ref, tg)
    a = v = g
    for i in reversed(range(len(net))):
        layer, inp, out = net[i], acts[i], acts[i + 1]
        a_in = vjp(layer, inp, v)
        if isinstance(layer, POOLS):
            v = captum_maxpool(layer, inp, out, a, a_in)
        elif isinstance(layer, HOOKED):
            v = rescale(inp, out, a, a_in)
        else:
            v = a_in
        a = a_in
    return v[:b] * (x - ref)


def rule_deeplift(net, x, ref, tg, pool_rule):
    """DeepLIFT with every nonlinearity by the Rescale rule and max pooling by ``pool_rule``: ``'gradient'``
    (the pool's gradient) or ``'cross_max'`` (Captum's maxpool function, the reference's gradient equal
    to the input's)."""
    b = len(x)
    acts, g = forward_both(net, x, ref, tg)
    for i in reversed(range(len(net))):
        layer, inp, out = net[i], acts[i], acts[i + 1]
        a_in = vjp(layer, inp, g)
        if isinstance(layer, POOLS):
            g = a_in if pool_rule == "gradient" else captum_maxpool(layer, inp, out, g, a_in)
        elif isinstance(layer, HOOKED):
            g = rescale(inp, out, g, a_in)
        else:
            g = a_in
        g = torch.cat([g[:b], g[:b]])  # the reference rows carry the input rows' multipliers
    return g[:b] * (x - ref)


def net1d():
    """Conv → ReLU → MaxPool (the pool directly after a ReLU), Conv → MaxPool → Tanh (a pool after a
    linear layer, then a nonlinearity directly after the pool), dense → ReLU → dense."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3, padding=1),
                         nn.MaxPool1d(2), nn.Tanh(), nn.Flatten(), nn.Linear(16, 6), nn.ReLU(),
                         nn.Linear(6, 3)).eval()


def net2d():
    """The usual CNN blocks: Conv → ReLU(inplace) → MaxPool twice, with a dropout between."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(20, 3)).eval()


def data(rank, n=4, seed=0):
    sp = (16,) if rank == 1 else (8, 8)
    r = np.random.default_rng(seed)
    return r.normal(size=(n, 2, *sp)).astype("float32"), r.normal(size=(3, 2, *sp)).astype("float32")


@pytest.mark.parametrize("rank", [1, 2])
def test_deeplift_equals_captums_loop_with_max_pooling(rank):
    net = net1d() if rank == 1 else net2d()
    x, refs = data(rank)
    xt = torch.as_tensor(x)
    tg = np.array([0, 1, 2, 1])
    tgt = torch.as_tensor(tg)
    for baseline in (0.0, "blur"):
        a = explain(net, x, "deeplift", target=tg, baseline=baseline)
        ref = torch.zeros_like(xt) if baseline == 0.0 else _blur(xt)
        want = captum_deeplift(net, xt, ref, tgt)
        np.testing.assert_allclose(a.maps, want.numpy(), atol=1e-6, rtol=1e-5)
    # DeepLIFT-SHAP over shared references (run once) and over per-sample noise references
    a = explain(net, x, "deeplift_shap", target=tg, baselines=refs)
    want = torch.stack([captum_deeplift(net, xt, torch.as_tensor(r).expand_as(xt), tgt) for r in refs]).mean(0)
    np.testing.assert_allclose(a.maps, want.numpy(), atol=1e-6, rtol=1e-5)
    # the rule matters: the cross maximum gives another map on the same references
    c = explain(net, x, "deeplift_shap", target=tg, baselines=refs, maxpool="cross_max")
    assert np.abs(c.maps - a.maps).max() > 1e-3


def _blur(xt):
    from trustmap.explain.segments import resolve_baseline

    return resolve_baseline(xt, "blur", blur_sigma=0.1, seed=0)


@pytest.mark.parametrize("rank", [1, 2])
def test_cross_max_and_gradient_rules_equal_their_loops_and_cross_max_sums_to_delta(rank):
    net = net1d() if rank == 1 else net2d()
    x, refs = data(rank, seed=3)
    xt = torch.as_tensor(x)
    tg = np.array([2, 0, 1, 2])
    tgt = torch.as_tensor(tg)
    for r in refs[:2]:
        ref = torch.as_tensor(r).expand_as(xt)
        for rule in ("cross_max", "gradient"):
            a = explain(net, x, "deeplift", target=tg, baseline=r, maxpool=rule)
            np.testing.assert_allclose(a.maps, rule_deeplift(net, xt, ref, tgt, rule).numpy(), atol=1e-6, rtol=1e-5)
            with torch.no_grad():
                d = (net(xt) - net(ref))[torch.arange(4), tgt].numpy()
            if rule == "cross_max":  # summation-to-delta for any reference
                np.testing.assert_allclose(a.maps.reshape(4, -1).sum(1), d, atol=1e-5, rtol=1e-5)
                assert np.abs(a.extras["delta"]).max() < 1e-5
            else:  # a reference that varies inside the pooling windows: the gradient rule does not sum to Δ
                assert np.abs(a.extras["delta"]).max() > 1e-4
    s = explain(net, x, "deeplift_shap", target=tg, baselines="noise", n_baselines=3, maxpool="cross_max")
    assert np.abs(s.extras["delta"]).max() < 1e-5


def test_keras_max_pooling_model_equals_its_torch_twin():
    """Keras pools channels-last inputs through permute(...).contiguous(): the fused ReLU → MaxPooling1D
    block is still recognised, so the default rule gives the torch twin's map."""
    keras = import_keras()
    keras.utils.set_random_seed(2)
    km = keras.Sequential([keras.Input((16, 2)), keras.layers.Conv1D(4, 3, padding="same", activation="relu"),
                           keras.layers.MaxPooling1D(2), keras.layers.Conv1D(4, 3, padding="same"),
                           keras.layers.MaxPooling1D(2), keras.layers.GlobalAveragePooling1D(),
                           keras.layers.Dense(3)])
    torch.manual_seed(0)
    tw = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3, padding=1),
                       nn.MaxPool1d(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        for conv, layer in ((tw[0], km.layers[0]), (tw[3], km.layers[2])):
            k, b = layer.get_weights()
            conv.weight.copy_(torch.as_tensor(np.transpose(k, (2, 1, 0))))
            conv.bias.copy_(torch.as_tensor(b))
        k, b = km.layers[-1].get_weights()
        tw[-1].weight.copy_(torch.as_tensor(k.T))
        tw[-1].bias.copy_(torch.as_tensor(b))
    x = np.random.default_rng(1).normal(size=(3, 16, 2)).astype("float32")
    xt = torch.as_tensor(np.moveaxis(x, -1, 1))
    for rule in ("cross_max", "captum"):
        ak = explain(km, x, "deeplift", target=1, baseline=0.3, maxpool=rule)
        at = explain(load_model(tw, input_shape=(2, 16)), xt.numpy(), "deeplift", target=1, baseline=0.3,
                     maxpool=rule)
        np.testing.assert_allclose(np.moveaxis(ak.maps, -1, 1), at.maps, atol=1e-5, rtol=1e-4)
    want = captum_deeplift(tw, xt, torch.full_like(xt, 0.3), torch.ones(3, dtype=torch.long))
    np.testing.assert_allclose(at.maps, want.numpy(), atol=1e-5, rtol=1e-4)
    assert ak.extras["rules_applied"] == 2  # the ReLU and the second pool; the first pool passes its gradient


def test_bad_maxpool_rule_is_a_typed_error():
    from trustmap.errors import InputError

    x, _ = data(1)
    with pytest.raises(InputError, match="maxpool"):
        explain(net1d(), x, "deeplift", maxpool="max")


def test_pool_then_inplace_relu():
    """An in-place ReLU straight after a max pool changes the pool's output: the reference's recorded
    pooled values must be a copy (the cross maximum then still sums to delta), and Captum's rule
    holds."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3),
                        nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 3)).eval()
    x, refs = data(2, seed=4)
    xt, tg = torch.as_tensor(x), np.array([0, 1, 2, 0])
    c = explain(net, x, "deeplift_shap", target=tg, baselines=refs, maxpool="cross_max")
    assert np.abs(c.extras["delta"]).max() < 1e-5
    a = explain(net, x, "deeplift_shap", target=tg, baselines=refs)
    want = torch.stack([captum_deeplift(net, xt, torch.as_tensor(r).expand_as(xt), torch.as_tensor(tg))
                        for r in refs]).mean(0)
    np.testing.assert_allclose(a.maps, want.numpy(), atol=1e-6, rtol=1e-5)
