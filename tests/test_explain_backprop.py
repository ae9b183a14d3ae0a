"""Input×Gradient, Deconvolution, DeepLIFT, DeepLIFT-SHAP and GradientSHAP against reference loops
of their definitions (Captum's formulas written out layer by layer), summation-to-delta, and the
Keras fused-activation path against a torch twin."""

import numpy as np
import pytest
import torch
from torch import nn

from trustmap.explain import explain, methods_where
from trustmap.models import import_keras, load_model


def seq_net(rank=1, c=2, act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    conv, bn, avg = (nn.Conv1d, nn.BatchNorm1d, nn.AvgPool1d) if rank == 1 else (nn.Conv2d, nn.BatchNorm2d,
                                                                                   nn.AvgPool2d)
    net = nn.Sequential(conv(c, 4, 3, padding=1), bn(4), act(), conv(4, 4, 3, padding=1), nn.ReLU(), avg(2),
                        nn.Flatten(), nn.Linear(32 if rank == 1 else 64, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.3, 0.3)
        net[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def make_x(rank, c=2, n=4, seed=1):
    sp = (16,) if rank == 1 else (8, 8)
    return np.random.default_rng(seed).normal(size=(n, c, *sp)).astype("float32")


def vjp(layer, a, g):
    a = a.detach().requires_grad_(True)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(layer(a), a, g)
    return out


def reference_backward(net, x, target, relu_rule, ref=None):
    """Backward through ``net`` layer by layer: linear layers by their exact VJP, nonlinearities by
    ``relu_rule(g, a, a_ref)`` (a_ref is None without a reference)."""
    acts, acts_ref = [x], [ref]
    for layer in net:
        acts.append(layer(acts[-1]).detach())
        if ref is not None:
            acts_ref.append(layer(acts_ref[-1]).detach())
    out = acts[-1]
    g = torch.zeros_like(out)
    g[torch.arange(len(out)), target] = 1.0
    for i in reversed(range(len(net))):
        layer = net[i]
        if isinstance(layer, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
            g = relu_rule(layer, g, acts[i], None if ref is None else acts_ref[i])
        else:
            g = vjp(layer, acts[i], g)
    return g


def rescale(layer, g, a, a_ref):
    d = a - a_ref
    small = d.abs() < 1e-10
    local = vjp(layer, a, g)
    return torch.where(small, local, g * (layer(a) - layer(a_ref)) / torch.where(small, torch.ones_like(d), d))


@pytest.mark.parametrize("rank", [1, 2])
def test_input_x_gradient_and_deconvolution_equal_their_definitions(rank):
    net = seq_net(rank)
    x = make_x(rank)
    tg = np.array([0, 1, 2, 1])
    xt = torch.as_tensor(x)
    grad = reference_backward(net, xt, tg, lambda layer, g, a, r: vjp(layer, a, g))
    ixg = explain(net, x, "input_x_gradient", target=tg).maps
    np.testing.assert_allclose(ixg, (grad * xt).numpy(), atol=1e-5, rtol=1e-5)
    dec = reference_backward(net, xt, tg, lambda layer, g, a, r: g.clamp_min(0))
    a = explain(net, x, "deconvolution", target=tg)
    np.testing.assert_allclose(a.maps, dec.numpy(), atol=1e-5, rtol=1e-5)
    assert a.extras["relus_replaced"] == 2
    assert not np.allclose(a.maps, grad.numpy(), atol=1e-3)  # the rule matters


@pytest.mark.parametrize("rank, act", [(1, nn.ReLU), (1, nn.Tanh), (2, nn.Sigmoid)])
@pytest.mark.parametrize("baseline", ["zero", 0.3])
def test_deeplift_equals_rescale_multipliers_and_sums_to_delta(rank, act, baseline):
    net = seq_net(rank, act=act)
    x = make_x(rank)
    tg = np.array([2, 0, 1, 2])
    xt = torch.as_tensor(x)
    ref = torch.full_like(xt, 0.0 if baseline == "zero" else baseline)
    m = reference_backward(net, xt, tg, rescale, ref)
    a = explain(net, x, "deeplift", target=tg, baseline=baseline)
    np.testing.assert_allclose(a.maps, ((xt - ref) * m).numpy(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        d = (net(xt) - net(ref))[torch.arange(4), tg].numpy()
    np.testing.assert_allclose(a.maps.reshape(4, -1).sum(1), d, atol=1e-5, rtol=1e-5)
    assert np.abs(a.extras["delta"]).max() < 1e-5
    assert not np.allclose(a.maps, (xt * reference_backward(net, xt, tg, lambda l, g, a_, r: vjp(l, a_, g))
                                    ).numpy() if baseline == "zero" else 0, atol=1e-4)


@pytest.mark.parametrize("rank", [1, 2])
def test_deeplift_max_pooling_keeps_summation_to_delta(rank):
    torch.manual_seed(3)
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if rank == 1 else (nn.Conv2d, nn.MaxPool2d)
    gap = nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool2d(1)
    net = nn.Sequential(conv(3, 5, 3, padding=1), nn.ReLU(inplace=True), pool(2), conv(5, 5, 3), nn.ELU(),
                        pool(2, stride=1), gap, nn.Flatten(), nn.Linear(5, 3)).eval()
    x = make_x(rank, 3, n=5)
    for baseline in ("zero", "blur", "noise"):  # the cross maximum sums to delta for any reference
        a = explain(net, x, "deeplift", baseline=baseline, maxpool="cross_max")
        assert np.abs(a.extras["delta"]).max() < 1e-5 * max(1.0, np.abs(a.maps).sum(axis=tuple(range(1, x.ndim)))
                                                            .max())
        assert a.extras["rules_applied"] == 4


def test_deeplift_shap_is_deeplift_averaged_over_references():
    net = seq_net(1)
    x = make_x(1, n=3)
    refs = np.random.default_rng(5).normal(size=(4, 2, 16)).astype("float32")
    a = explain(net, x, "deeplift_shap", target=1, baselines=refs)
    each = [explain(net, x, "deeplift", target=1, baseline=r).maps for r in refs]
    np.testing.assert_allclose(a.maps, np.mean(each, 0), atol=1e-5, rtol=1e-5)
    assert np.abs(a.extras["delta"]).max() < 1e-5
    # channels-last references are accepted and mean the same
    b = explain(net, x, "deeplift_shap", target=1, baselines=np.moveaxis(refs, 1, -1))
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-6)


def integrated_gradients(net, x, ref, tg, steps=400):
    acc = torch.zeros_like(x)
    for k in range(steps):
        p = (ref + (k + 0.5) / steps * (x - ref)).requires_grad_(True)
        s = net(p)[torch.arange(len(x)), tg].sum()
        (g,) = torch.autograd.grad(s, p)
        acc += g / steps
    return acc * (x - ref)


def test_gradient_shap_expectation_is_ig_averaged_over_references():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(32, 2)).eval()
    x = make_x(1, 1, n=2)
    refs = np.random.default_rng(2).normal(size=(3, 1, 8)).astype("float32") * 0.5
    x = x[..., :8]
    tg = np.array([0, 1])
    a = explain(net, x, "gradient_shap", target=tg, baselines=refs, n_samples=4000, noise_level=0.0)
    want = np.mean([integrated_gradients(net, torch.as_tensor(x), torch.as_tensor(r).expand(2, 1, 8),
                                         torch.as_tensor(tg)).detach().numpy() for r in refs], 0)
    scale = np.abs(want).max()
    np.testing.assert_allclose(a.maps, want, atol=0.04 * scale)
    # the expectation's total is f(x) - mean f(ref) (IG's completeness, averaged)
    with torch.no_grad():
        fx = net(torch.as_tensor(x))[torch.arange(2), tg].numpy()
        fr = np.mean([net(torch.as_tensor(r)[None])[0, tg].numpy() for r in refs], 0)
    np.testing.assert_allclose(a.maps.reshape(2, -1).sum(1), fx - fr, atol=0.04 * np.abs(fx - fr).max())
    # noise changes the answer, a seed reproduces it
    b = explain(net, x, "gradient_shap", target=tg, baselines=refs, n_samples=20, noise_level=0.2, seed=3)
    c = explain(net, x, "gradient_shap", target=tg, baselines=refs, n_samples=20, noise_level=0.2, seed=3)
    np.testing.assert_array_equal(b.maps, c.maps)


def test_keras_fused_activations_match_a_torch_twin():
    keras = import_keras()
    keras.utils.set_random_seed(1)
    km = keras.Sequential([keras.Input((12, 1)), keras.layers.Flatten(), keras.layers.Dense(6, activation="relu"),
                           keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3, activation="softmax")])
    tw = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        for lin, (k, b) in zip([tw[1], tw[3], tw[5]], [km.layers[i].get_weights() for i in range(1, 4)]):
            lin.weight.copy_(torch.as_tensor(k.T))
            lin.bias.copy_(torch.as_tensor(b))
    x = np.random.default_rng(0).normal(size=(4, 12, 1)).astype("float32")
    for method, params in [("deeplift", {"baseline": 0.2}), ("deconvolution", {}), ("input_x_gradient", {}),
                           ("deeplift_shap", {"n_baselines": 3})]:
        ak = explain(km, x, method, target=1, **params)
        at = explain(load_model(tw, input_shape=(1, 12)), np.moveaxis(x, -1, 1), method, target=1, **params)
        np.testing.assert_allclose(ak.maps[..., 0], at.maps[:, 0], atol=1e-5, rtol=1e-4)
    assert np.abs(explain(km, x, "deeplift", target=2).extras["delta"]).max() < 1e-5


def test_method_facts_derive_the_lists():
    from trustmap.models import BLACK_BOX_METHODS
    from trustmap.report import SYNTHESIS_METHODS

    assert set(BLACK_BOX_METHODS) == set(methods_where(needs_gradients=False)) >= {"occlusion", "lime",
                                                                                      "kernelshap"}
    assert set(SYNTHESIS_METHODS) == {"activation_max"}
    assert {"smoothgrad", "gradient_shap", "deeplift_shap", "lime"} <= set(methods_where(stochastic=True))
    assert "deeplift" in methods_where(needs_gradients=True, stochastic=False)


def test_cli_runs_new_methods_on_a_saved_keras_file(tmp_path, capsys):
    from trustmap.attribution import Attribution
    from trustmap.cli import main

    keras = import_keras()
    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((40, 2)), keras.layers.Conv1D(4, 5, activation="relu"),
                           keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3, activation="softmax")])
    km.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(3, 40, 2)).astype("float32")  # unlabeled, channels last
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    code = main(["explain", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--method", "deeplift,shapley_sampling", "--plots", "1", "--out", str(out)])
    assert code == 0
    a = Attribution.load(out / "deeplift.npz")
    assert a.maps.shape == x.shape and np.abs(a.extras["delta"]).max() < 1e-4
    assert Attribution.load(out / "shapley_sampling.npz").maps.shape == x.shape
    capsys.readouterr()
    assert main(["explain", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "x.npy"),
                 "--method", "lrp", "--quiet", "--out", str(tmp_path / "o2")]) == 0
    b = Attribution.load(tmp_path / "o2" / "lrp.npz")  # the same map as from Python
    np.testing.assert_allclose(b.maps, explain(km, x, "lrp", target=b.targets).maps, atol=1e-6)
    assert b.maps.shape == x.shape and b.extras["layers_with_rules"] == 2


def test_inplace_activations_with_positional_flags():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv1d(1, 3, 3), nn.LeakyReLU(0.1, inplace=True), nn.Conv1d(3, 3, 3), nn.ELU(inplace=True),
                        nn.Flatten(), nn.Linear(3 * 12, 2)).eval()
    x = np.random.default_rng(0).normal(size=(3, 1, 16)).astype("float32")
    a = explain(net, x, "deeplift", target=1)
    assert np.abs(a.extras["delta"]).max() < 1e-5 and a.extras["rules_applied"] == 2
    b = explain(net, x, "lrp", composite="epsilon", target=1)
    assert np.isfinite(b.maps).all()
    with torch.no_grad():
        assert torch.allclose(net(torch.as_tensor(x)), net(torch.as_tensor(x)))  # model still works


class _Branchy(nn.Module):
    """Data-dependent control flow: the reference (zeros) and the input take different activations."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        h = self.conv(x)
        h = torch.relu(h) if float(x.detach().abs().sum()) > 0 else torch.tanh(h) * 2
        return self.fc(torch.sigmoid(h).flatten(1))


def test_deeplift_falls_back_to_one_batch_when_the_two_passes_differ():
    from trustmap.explain.backprop import deeplift_rules

    net = _Branchy().eval()
    x = torch.as_tensor(make_x(1))
    # every rule kept (under the default 'captum' the sigmoid straight after the ReLU would pass its gradient)
    a = explain(load_model(net, input_shape=(2, 16)), x.numpy(), "deeplift", target=1, baseline=0.0,
                maxpool="cross_max")
    # the reference loop: one batch [x; 0] (Captum's way), where both rows see the same branch
    both = torch.cat([x, torch.zeros_like(x)]).requires_grad_(True)
    with deeplift_rules("cross_max"):
        out = net(both)
    (g,) = torch.autograd.grad(out[:4, 1].sum(), both)
    np.testing.assert_allclose(a.maps, (g[:4] * x).numpy(), atol=1e-6)
    assert np.abs(a.extras["delta"]).max() < 1e-5  # the batched run's reference shares the input's branch


def test_explainer_params_are_the_init_parameters_of_each_class():
    """``Explainer.params`` (parameter names read once per class) names each class's own ``__init__``
    parameters, a subclass's included, and follows an ``__init__`` replaced after first use."""
    from trustmap.explain import Explainer, get_explainer

    assert get_explainer("deeplift", baseline=0.5).params == {"baseline": 0.5, "blur_sigma": 0.1, "seed": 0,
                                                               "maxpool": "captum"}
    assert get_explainer("input_x_gradient").params == {}

    class Scaled(Explainer):
        name = "scaled_test"

        def __init__(self, factor: float = 2.0) -> None:
            self.factor = factor

    assert Scaled().params == {"factor": 2.0}

    def init(self, factor: float = 3.0, bias: float = 1.0) -> None:
        self.factor, self.bias = factor, bias

    Scaled.__init__ = init
    assert Scaled().params == {"factor": 3.0, "bias": 1.0}
