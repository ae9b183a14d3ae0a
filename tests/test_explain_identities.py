"""Right numbers: analytic identities and hand computations for the gradient and CAM explainers."""

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.explain import class_average, explain
from trustmap.models import import_keras


def linear_model(c, spatial, k=3, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(c * int(np.prod(spatial)), k))
    return net, trustmap.load_model(net, input_shape=(c, *spatial))


def interp_matrix(n_out, n_in):
    """torch's linear interpolation (align_corners=False) as a matrix, written out by hand."""
    m = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1 - lam
        m[i, i1] += lam
    return m


# ---------------------------------------------------------------- saliency / IG on linear models
@pytest.mark.parametrize("c, spatial, layout", [(2, (10,), "NLC"), (3, (4, 5), "NCHW"), (1, (6, 7), "NHW")])
def test_saliency_of_linear_model_equals_its_weights(c, spatial, layout, rng):
    net, m = linear_model(c, spatial)
    W = net[1].weight.detach().numpy().reshape(3, c, *spatial)
    x_int = rng.normal(size=(5, c, *spatial)).astype("float32")
    x = trustmap.layout.Layout(layout).from_internal(x_int)
    target = np.array([0, 1, 2, 1, 0])
    a = explain(m, x, "saliency", target=target, absolute=False)
    assert a.layout == layout and a.maps.shape == x.shape
    np.testing.assert_allclose(a.internal(), W[target], atol=1e-6)
    gi = explain(m, x, "saliency", target=target, absolute=False, times_input=True)
    np.testing.assert_allclose(gi.internal(), W[target] * x_int, atol=1e-6)
    ab = explain(m, x, "saliency", target=target)  # default: |gradient|
    np.testing.assert_allclose(ab.internal(), np.abs(W[target]), atol=1e-6)
    # smoothgrad of a linear model is the gradient whatever the noise
    sg = explain(m, x, "smoothgrad", target=target, absolute=False, n_samples=5, noise_level=0.5)
    np.testing.assert_allclose(sg.internal(), W[target], atol=1e-6)


def test_integrated_gradients_of_linear_model_is_weight_times_difference(rng):
    net, m = linear_model(2, (8,))
    W = net[1].weight.detach().numpy().reshape(3, 2, 8)
    x = rng.normal(size=(4, 2, 8)).astype("float32")
    for baseline, base in [("zero", np.zeros_like(x)), ("mean", np.broadcast_to(x.mean(2, keepdims=True), x.shape)),
                           (0.5, np.full_like(x, 0.5))]:
        a = explain(m, x, "integrated_gradients", target=1, baseline=baseline, n_steps=3)
        np.testing.assert_allclose(a.maps, W[1] * (x - base), atol=1e-5)


def smooth_net(c, rank):
    torch.manual_seed(3)
    conv = nn.Conv1d if rank == 1 else nn.Conv2d
    return nn.Sequential(conv(c, 4, 3, padding=1), nn.Softplus(), conv(4, 4, 3, padding=1), nn.Tanh(),
                         nn.Flatten(), nn.LazyLinear(3))


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur", "noise"])
@pytest.mark.parametrize("rank", [1, 2])
def test_integrated_gradients_completeness_float64(baseline, rank, rng):
    spatial = (16,) if rank == 1 else (6, 7)
    net = smooth_net(2, rank)
    net(torch.zeros(1, 2, *spatial))  # materialise the lazy layer
    m = trustmap.load_model(net, dtype=torch.float64)
    x = rng.normal(size=(3, 2, *spatial))
    a = explain(m, x, "integrated_gradients", target=[0, 1, 2], baseline=baseline, n_steps=50)
    d = np.abs(a.extras["delta"])
    assert d.max() < 1e-4, d
    # the delta is what it says: sum of the map minus f(x) - f(baseline), f computed independently
    net64 = m._body
    with torch.no_grad():
        fx = net64(torch.as_tensor(x))[np.arange(3), [0, 1, 2]].numpy()
    np.testing.assert_allclose(a.extras["score"], fx, atol=1e-10)
    np.testing.assert_allclose(a.maps.reshape(3, -1).sum(1) - (a.extras["score"] - a.extras["baseline_score"]),
                               a.extras["delta"], atol=1e-12)
    if baseline == "zero":
        with torch.no_grad():
            f0 = net64(torch.zeros_like(torch.as_tensor(x)))[np.arange(3), [0, 1, 2]].numpy()
        np.testing.assert_allclose(a.maps.reshape(3, -1).sum(1), fx - f0, atol=1e-4)
    # a cruder rule converges more slowly: its delta is larger (the delta measures something)
    coarse = explain(m, x, "integrated_gradients", target=[0, 1, 2], baseline=baseline, n_steps=4,
                     rule="riemann_left")
    assert np.abs(coarse.extras["delta"]).max() > 10 * d.max()


# ---------------------------------------------------------------- Grad-CAM by hand
def hand_net_1d():
    net = nn.Sequential(nn.Conv1d(1, 2, 1), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(6, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[[1.0]], [[-0.5]]]))
        net[0].bias.copy_(torch.tensor([0.0, 0.2]))
        net[4].weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 1.0, 0.3, -0.2], [-1.0, 0.4, 0.1, 0.7, -0.3, 1.5]]))
        net[4].bias.zero_()
    return net


def test_gradcam_equals_hand_computation_1d():
    net = hand_net_1d()
    x = np.array([[[0.3, -0.4, 1.2, 0.5, -0.9, 0.8]]], dtype="float32")
    W = net[4].weight.detach().numpy().reshape(2, 2, 3)  # class, channel, position after the pool
    # by hand: A = maxpool(relu(w x + b)); d y_c / d A[k, j] = W[c, k, j]; alpha_k = mean_j W[c, k, j]
    pre = np.stack([1.0 * x[0, 0] + 0.0, -0.5 * x[0, 0] + 0.2])
    A = np.maximum(pre, 0).reshape(2, 3, 2).max(2)
    for c in (0, 1):
        alpha = W[c].mean(1)
        cam = np.maximum((alpha[:, None] * A).sum(0), 0)
        expected = interp_matrix(6, 3) @ cam
        assert cam.max() > 0.1  # non-trivial
        a = explain(net, x, "gradcam", target=c, layer="2")
        np.testing.assert_allclose(a.extras["weights"][0], alpha, atol=1e-6)
        np.testing.assert_allclose(a.extras["cam"][0], cam, atol=1e-6)
        np.testing.assert_allclose(a.maps[0, 0], expected, atol=1e-6)
        # HiResCAM keeps the gradient per position: sum_k W[c,k,j] A[k,j]
        h = explain(net, x, "hirescam", target=c, layer="2")
        np.testing.assert_allclose(h.extras["cam"][0], np.maximum((W[c] * A).sum(0), 0), atol=1e-6)
        # Grad-CAM++ from its closed form, with the same hand gradients
        g = np.broadcast_to(W[c], A.shape)
        g2, g3 = g ** 2, g ** 3
        den = 2 * g2 + A.sum(1, keepdims=True) * g3
        aij = np.where(den != 0, g2 / np.where(den != 0, den, 1), 0)
        wpp = (aij * np.maximum(g, 0)).sum(1)
        pp = explain(net, x, "gradcam_pp", target=c, layer="2")
        np.testing.assert_allclose(pp.extras["weights"][0], wpp, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(pp.maps[0, 0], interp_matrix(6, 3) @ np.maximum((wpp[:, None] * A).sum(0), 0),
                                   rtol=1e-5, atol=1e-7)


def test_gradcam_equals_hand_computation_2d_bilinear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 3 * 2, 2))
    x = np.random.default_rng(4).normal(size=(2, 6, 4)).astype("float32")  # NHW
    w0 = net[0].weight.detach().numpy().reshape(3)
    b0 = net[0].bias.detach().numpy()
    W = net[4].weight.detach().numpy().reshape(2, 3, 3, 2)
    a = explain(net, x, "gradcam", target=[1, 0], layer="2")
    assert a.maps.shape == x.shape and a.layout == "NHW"
    for i, c in enumerate([1, 0]):
        pre = w0[:, None, None] * x[i] + b0[:, None, None]
        A = np.maximum(pre, 0).reshape(3, 3, 2, 2, 2).max(axis=(2, 4))
        alpha = W[c].mean(axis=(1, 2))
        cam = np.maximum((alpha[:, None, None] * A).sum(0), 0)
        expected = interp_matrix(6, 3) @ cam @ interp_matrix(4, 2).T
        assert cam.max() > 0.01 and len(np.unique(expected)) > 4
        np.testing.assert_allclose(a.maps[i], expected, atol=1e-6)


def test_cam_per_channel_splits_the_cam_by_gradient_times_input(rng):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    x = rng.normal(size=(4, 3, 12)).astype("float32")
    shared = explain(net, x, "gradcam", target=1)
    split = explain(net, x, "gradcam", target=1, per_channel=True)
    # shared: every channel carries the same map; split: channel maps sum to that map
    np.testing.assert_allclose(shared.maps[:, 0], shared.maps[:, 2])
    np.testing.assert_allclose(split.maps.sum(1), shared.maps[:, 0], rtol=1e-5, atol=1e-7)
    g = explain(net, x, "saliency", target=1, absolute=False, times_input=True).maps
    share = np.abs(g) / np.abs(g).sum(1, keepdims=True)
    np.testing.assert_allclose(split.maps, shared.maps * share, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- Score-CAM and Ablation-CAM vs plain loops
def cam_net(skip=False):
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv1d(2, 5, 3, padding=1)
            self.conv2 = nn.Conv1d(5, 5, 3, padding=1)
            self.head = nn.Linear(5, 3)

        def forward(self, x):
            h = torch.relu(self.conv1(x))
            z = torch.relu(self.conv2(h))
            if skip:
                z = z + h  # a skip connection around the layer
            return self.head(z.mean(2))

    return Net()


@pytest.mark.parametrize("skip", [False, True])
def test_ablationcam_equals_one_channel_at_a_time_loop(skip, rng):
    net = cam_net(skip)
    x = rng.normal(size=(4, 2, 10)).astype("float32")
    a = explain(net, x, "ablationcam", target=2, layer="conv2", relu=False)
    assert a.extras["ablation_batching"] == ("repeat" if skip else "expand")
    # independent: zero channel k with a hook, one channel at a time
    xt = torch.as_tensor(x)
    with torch.no_grad():
        y = net(xt)[:, 2]
        drops = []
        for k in range(5):
            h = net.conv2.register_forward_hook(lambda m, i, o, k=k: o.index_fill(1, torch.tensor([k]), 0.0))
            try:
                drops.append((y - net(xt)[:, 2]).numpy())
            finally:
                h.remove()
        act = net.conv2(torch.relu(net.conv1(xt))).numpy()  # the captured output: conv2, before the relu
    drops = np.stack(drops, 1)
    np.testing.assert_allclose(a.extras["weights"], drops, atol=1e-5)
    cam = (drops[:, :, None] * act).sum(1)
    assert np.abs(cam).max() > 1e-3
    np.testing.assert_allclose(a.maps[:, 0], cam, atol=1e-5)
    np.testing.assert_allclose(explain(net, x, "ablationcam", target=2, layer="conv2").maps[:, 0],
                               np.maximum(cam, 0), atol=1e-5)


def test_ablationcam_zeroing_the_output_of_a_fused_relu_layer_keras(rng):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    km = keras.Sequential([keras.Input((10, 2)), L.Conv1D(4, 3, padding="same", activation="relu", name="c1"),
                           L.Conv1D(4, 3, padding="same", activation="relu", name="c2"),
                           L.GlobalAveragePooling1D(), L.Dense(3)])
    x = rng.normal(size=(3, 10, 2)).astype("float32")
    a = explain(km, x, "ablationcam", target=0, layer="c2")
    feats = keras.ops.convert_to_numpy(keras.Model(km.inputs[0], km.get_layer("c2").output)(x))  # (N, L, K)
    w, b = km.layers[-1].get_weights()
    y = feats.mean(1) @ w[:, 0]
    drops = np.stack([y - np.delete(feats, k, axis=2).mean(1) @ np.delete(w[:, 0], k) for k in range(4)], 1)
    np.testing.assert_allclose(a.extras["weights"], drops, atol=1e-5)


def test_scorecam_equals_masked_forward_loop(rng):
    net = cam_net()
    x = rng.normal(size=(3, 2, 10)).astype("float32")
    a = explain(net, x, "scorecam", target=1, layer="conv2", relu=False)
    xt = torch.as_tensor(x)
    with torch.no_grad():
        act = net.conv2(torch.relu(net.conv1(xt))).numpy()  # (N, K, L): same length, no upsampling
        weights = np.zeros((3, 5))
        for i in range(3):
            for k in range(5):
                mk = act[i, k]
                mk = (mk - mk.min()) / (mk.max() - mk.min()) if mk.max() > mk.min() else np.zeros_like(mk)
                p = torch.softmax(net(torch.as_tensor(x[i:i + 1] * mk[None, None])), 1)[0, 1]
                weights[i, k] = float(p)
    np.testing.assert_allclose(a.extras["weights"], weights, atol=1e-6)
    cam = (weights[:, :, None] * act).sum(1)
    assert np.abs(cam).max() > 1e-2
    np.testing.assert_allclose(a.maps[:, 0], cam, atol=1e-5)


# ---------------------------------------------------------------- guided backprop
def keras_fused(length=30, channels=2):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    return keras.Sequential([
        keras.Input((length, channels)),
        L.Conv1D(6, 5, padding="same", activation="relu", name="conv1"),
        L.Conv1D(6, 3, padding="same", activation="relu", name="conv2"),
        L.Flatten(),
        L.Dense(8, activation="relu", name="fc1"),
        L.Dense(3, activation="softmax", name="out"),
    ])


def torch_twin(km, length=30):
    w = km.get_weights()
    net = nn.Sequential(nn.Conv1d(2, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 6, 3, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * length, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w[0]).permute(2, 1, 0))
        net[0].bias.copy_(torch.tensor(w[1]))
        net[2].weight.copy_(torch.tensor(w[2]).permute(2, 1, 0))
        net[2].bias.copy_(torch.tensor(w[3]))
        # Keras flattens (L, C) row-major; torch flattens (C, L)
        w4 = torch.tensor(w[4]).reshape(length, 6, 8).permute(1, 0, 2).reshape(6 * length, 8)
        net[5].weight.copy_(w4.T)
        net[5].bias.copy_(torch.tensor(w[5]))
        net[7].weight.copy_(torch.tensor(w[6]).T)
        net[7].bias.copy_(torch.tensor(w[7]))
    return net


def hook_guided_backprop(net, x, target):
    """An independent guided backprop: backward hooks on the nn.ReLU modules."""
    hooks = [m.register_full_backward_hook(lambda mod, gin, gout: (gin[0].clamp(min=0),))
             for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        xt = torch.as_tensor(x).requires_grad_(True)
        net(xt)[:, target].sum().backward()
        return xt.grad.numpy()
    finally:
        for h in hooks:
            h.remove()


def test_guided_backprop_keras_fused_relu_equals_torch_nn_relu(rng):
    km = keras_fused()
    x = rng.normal(size=(5, 30, 2)).astype("float32")
    gb = explain(km, x, "guided_backprop", target=1)
    plain = explain(km, x, "saliency", target=1, absolute=False)
    assert gb.extras["relus_replaced"] == 3  # two fused Conv1D relus and one fused Dense relu
    assert np.abs(gb.maps - plain.maps).max() > 0.1 * np.abs(plain.maps).max()  # not the plain gradient
    net = torch_twin(km)
    np.testing.assert_allclose(net(torch.as_tensor(np.moveaxis(x, -1, 1))).detach().numpy(),
                               trustmap.load_model(km).logits(x), atol=1e-5)  # the twin is the same network
    tw = explain(net, x, "guided_backprop", target=1, layout="NLC")
    np.testing.assert_allclose(tw.maps, gb.maps, atol=1e-6)
    ref = hook_guided_backprop(net, np.moveaxis(x, -1, 1), 1)
    np.testing.assert_allclose(np.moveaxis(tw.maps, -1, 1), ref, atol=1e-6)


class FunctionalRelu(nn.Module):
    """The torch twin written with functional relu calls of every kind (incl. in-place)."""

    def __init__(self, net):
        super().__init__()
        self.c1, self.c2, self.f1, self.f2 = net[0], net[2], net[5], net[7]

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = nn.functional.relu(self.c2(x), inplace=True)
        x = self.f1(x.flatten(1)).relu_()
        return self.f2(x)


def test_guided_backprop_functional_relu_equals_module_relu(rng):
    net = torch_twin(keras_fused())
    x = rng.normal(size=(4, 2, 30)).astype("float32")
    a = explain(net, x, "guided_backprop", target=0)
    b = explain(FunctionalRelu(net), x, "guided_backprop", target=0)
    assert b.extras["relus_replaced"] == 3
    np.testing.assert_allclose(b.maps, a.maps, atol=1e-6)
    np.testing.assert_allclose(a.maps, hook_guided_backprop(net, x, 0), atol=1e-6)


def test_guided_backprop_without_relu_warns_and_equals_gradient(rng):
    net = smooth_net(2, 1)
    x = rng.normal(size=(2, 2, 16)).astype("float32")
    net(torch.as_tensor(x))
    with pytest.warns(UserWarning, match="no ReLU"):
        a = explain(net, x, "guided_backprop", target=0)
    np.testing.assert_allclose(a.maps, explain(net, x, "saliency", target=0, absolute=False).maps, atol=1e-7)


def test_guided_gradcam_is_guided_backprop_times_gradcam(rng):
    net = cam_net()
    x = rng.normal(size=(3, 2, 10)).astype("float32")
    ggc = explain(net, x, "guided_gradcam", target=2, layer="conv2")
    gc = explain(net, x, "gradcam", target=2, layer="conv2")
    gb = explain(net, x, "guided_backprop", target=2)
    np.testing.assert_allclose(ggc.maps, gc.maps * gb.maps, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- activation maximization
def test_activation_max_of_linear_model_goes_to_the_box_corner(rng):
    net, m = linear_model(2, (6,))
    x = rng.normal(size=(3, 2, 6)).astype("float32")
    a = explain(m, x, "activation_max", target=[0, 1, 2], l2=0.0, tv=0.0, start="mean", n_steps=300, lr=0.2)
    W = net[1].weight.detach().numpy().reshape(3, 2, 6)
    lo = x.reshape(3, -1).min(1)[:, None, None]
    hi = x.reshape(3, -1).max(1)[:, None, None]
    corner = np.where(W[[0, 1, 2]] > 0, hi, lo)
    np.testing.assert_allclose(a.maps, corner, atol=1e-3)
    assert np.all(a.extras["score"] > a.extras["start_score"])


def test_activation_max_of_a_unit_raises_that_unit(rng):
    net = cam_net()
    x = rng.normal(size=(3, 2, 10)).astype("float32")
    a = explain(net, x, "activation_max", layer="conv2", target=3, n_steps=30)
    assert a.maps.shape == x.shape and np.all(a.targets == 3)
    assert np.all(a.extras["score"] > a.extras["start_score"])
    with torch.no_grad():
        unit = torch.relu(net.conv2(torch.relu(net.conv1(torch.as_tensor(a.maps)))))[:, 3].mean(1).numpy()
    np.testing.assert_allclose(unit, a.extras["score"], rtol=1e-5)
    with pytest.raises(trustmap.errors.TargetError, match="0..4"):
        explain(net, x, "activation_max", layer="conv2", target=7)


# ---------------------------------------------------------------- class average
def test_class_average_mean_sem_and_bootstrap_ci(rng):
    net, m = linear_model(1, (5,))
    W = net[1].weight.detach().numpy().reshape(3, 5)
    X = rng.normal(size=(90, 5)).astype("float32")
    y = np.repeat([0, 1, 2], 30)
    ca = class_average(m, X, y, method="saliency", absolute=False, times_input=True, n_boot=4000, seed=1)
    assert ca.maps.shape == (3, 5) and list(ca.targets) == [0, 1, 2] and list(ca.extras["n"]) == [30, 30, 30]
    for c in range(3):
        xs = X[y == c]
        np.testing.assert_allclose(ca.maps[c], W[c] * xs.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ca.extras["sem"][c], np.abs(W[c]) * xs.std(0, ddof=1) / np.sqrt(30), rtol=1e-4)
    width = ca.extras["ci_high"] - ca.extras["ci_low"]
    # percentile bootstrap of a mean ~ normal interval of width 2 * 1.96 * SEM (biased a little low, sqrt((n-1)/n))
    np.testing.assert_allclose(width, 2 * 1.96 * ca.extras["sem"], rtol=0.12)
    assert np.all((ca.extras["ci_low"] <= ca.maps) & (ca.maps <= ca.extras["ci_high"]))
    # n_per_class subsamples (seeded), and the default labels are the predictions
    sub = class_average(m, X, y, n_per_class=10, n_boot=50, seed=3)
    assert list(sub.extras["n"]) == [10, 10, 10]
    pred = class_average(m, X, n_boot=20)
    assert sorted(pred.targets) == sorted(set(m.predict(X)))
