"""Conformance of every registered method x rank {1, 2} x channels {1, 3}: shape, finiteness,
determinism, batch invariance, the target matters, the model is left as it was (also after an error)."""

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.errors import InputError, LayerError, TargetError, UnsupportedError
from trustmap.explain import REGISTRY, explain, get_explainer, list_methods
from trustmap.models import import_keras

from conftest import assert_same_state, model_state

METHODS = list_methods()
FAST = {"integrated_gradients": {"n_steps": 6}, "smoothgrad": {"n_samples": 3}, "activation_max": {"n_steps": 4},
        "deeplift_shap": {"n_baselines": 2}, "gradient_shap": {"n_samples": 4, "n_baselines": 2},
        "shapley_sampling": {"n_permutations": 2}, "extremal_mask": {"n_iter": 3}, "dynamask": {"n_iter": 3},
        "tsr": {"window": 4}}
CONFIGS = [(1, 1), (1, 3), (2, 1), (2, 3)]
TORCH_ONLY: set = set()  # methods refused for Keras models with a typed error (none since lrp reads Keras)


def make_net(rank, channels, seed=0):
    torch.manual_seed(seed)
    conv, bn, pool = ((nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d) if rank == 1 else
                      (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d))
    gap = nn.AdaptiveAvgPool1d(1) if rank == 1 else nn.AdaptiveAvgPool2d(1)
    net = nn.Sequential(conv(channels, 6, 3, padding=1), bn(6), nn.ReLU(), pool(2),
                        conv(6, 6, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), gap, nn.Flatten(), nn.Linear(6, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)  # non-trivial running statistics
        net[1].running_var.uniform_(0.5, 1.5)
        net[9].weight.abs_()  # every class has positive evidence, so the CAMs (after their relu) are not empty
    return net


def make_x(rank, channels, n=3, seed=1):
    spatial = (16,) if rank == 1 else (8, 6)
    return np.random.default_rng(seed).normal(size=(n, channels, *spatial)).astype("float32")


@pytest.fixture(scope="module")
def nets():
    return {cfg: make_net(*cfg) for cfg in CONFIGS}


def test_registry_names_and_errors():
    assert {"saliency", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "gradcam_pp",
            "scorecam", "ablationcam", "guided_gradcam", "activation_max"} <= set(METHODS)
    for name in METHODS:
        assert REGISTRY[name].name == name
        get_explainer(name)  # default parameters are valid
    with pytest.raises(InputError, match="did you mean 'gradcam'"):
        get_explainer("gradcm")
    with pytest.raises(InputError, match="n_steps"):
        get_explainer("saliency", n_steps=3)
    with pytest.raises(InputError, match="baseline"):
        explain(make_net(1, 1), make_x(1, 1), "integrated_gradients", baseline="gaussian")


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"rank{c[0]}-ch{c[1]}")
@pytest.mark.parametrize("method", METHODS)
def test_conformance(method, cfg, nets):
    rank, channels = cfg
    net = nets[cfg]
    params = FAST.get(method, {})
    x = make_x(rank, channels)
    net.train()  # the explainer must switch to eval mode and back
    before = model_state(net)
    a = explain(net, x, method, **params)
    assert_same_state(before, model_state(net))
    assert net.training and net[6].training
    # shape, layout, finite, targets
    assert a.maps.shape == x.shape and a.layout == ("NCL" if rank == 1 else "NCHW") and a.method == method
    assert np.isfinite(a.maps).all() and np.abs(a.maps).max() > 0
    net.eval()
    with torch.no_grad():
        pred = net(torch.as_tensor(x)).argmax(1).numpy()
    net.train()
    np.testing.assert_array_equal(a.targets, pred)
    # determinism
    b = explain(net, x, method, **params)
    np.testing.assert_array_equal(a.maps, b.maps)
    # batch invariance: the batch equals its samples explained one by one
    one = np.concatenate([explain(net, x[i:i + 1], method, **params).maps for i in range(len(x))])
    scale = np.abs(a.maps).max()
    np.testing.assert_allclose(one, a.maps, rtol=1e-4, atol=1e-5 * scale)
    # the target changes the map
    m0 = explain(net, x, method, target=0, **params).maps
    m1 = explain(net, x, method, target=1, **params).maps
    assert not np.allclose(m0, m1, rtol=1e-3, atol=1e-6 * scale)
    assert_same_state(before, model_state(net))


class FailAfter(nn.Module):
    """Wraps a network; raises on the k-th forward call (counting from 1)."""

    def __init__(self, net, k):
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.k:
            raise RuntimeError("boom")
        return self.net(x)


@pytest.mark.parametrize("fail_at", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_model_unchanged_after_an_error_midway(method, fail_at):
    net = make_net(1, 3)
    x = make_x(1, 3)
    net.train()
    wrapped = FailAfter(net, fail_at)
    # the first forward pass (the n_classes probe) runs, a later one (inside the method) fails
    before = model_state(wrapped)
    try:
        explain(wrapped, x, method, target=0, **FAST.get(method, {}))
    except RuntimeError as exc:
        assert "boom" in str(exc)
    else:
        assert fail_at > 2  # methods with a single forward pass finish before a third call
    assert_same_state(before, model_state(wrapped))
    assert wrapped.training and net[1].training
    assert torch._C._len_torch_function_stack() == 0  # no guided-relu mode left behind
    for m in wrapped.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


@pytest.fixture(scope="module")
def keras_nets():
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    one = keras.Sequential([keras.Input((16, 3)), L.Conv1D(5, 3, padding="same", activation="relu", name="c1"),
                            L.MaxPooling1D(2), L.Conv1D(5, 3, padding="same", activation="relu", name="c2"),
                            L.GlobalAveragePooling1D(), L.Dense(3, activation="softmax")])
    two = keras.Sequential([keras.Input((8, 6, 1)), L.Conv2D(5, 3, padding="same", activation="relu", name="c1"),
                            L.Conv2D(5, 3, padding="same", activation="relu", name="c2"),
                            L.Flatten(), L.Dense(3)])
    return {1: one, 2: two}


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("method", METHODS)
def test_keras_channels_last_conformance(method, rank, keras_nets):
    km = keras_nets[rank]
    x = make_x(rank, 3 if rank == 1 else 1)
    x = np.moveaxis(x, 1, -1)  # channels last: (N, L, C) / (N, H, W, 1)
    weights = [w.copy() for w in km.get_weights()]
    if method in TORCH_ONLY:
        with pytest.raises(UnsupportedError, match="PyTorch"):
            explain(km, x, method, **FAST.get(method, {}))
        return
    a = explain(km, x, method, **FAST.get(method, {}))
    assert a.maps.shape == x.shape and a.layout == ("NLC" if rank == 1 else "NHWC")
    assert np.isfinite(a.maps).all() and np.abs(a.maps).max() > 0
    one = np.concatenate([explain(km, x[i:i + 1], method, **FAST.get(method, {})).maps for i in range(len(x))])
    np.testing.assert_allclose(one, a.maps, rtol=1e-4, atol=1e-5 * np.abs(a.maps).max())
    for w0, w1 in zip(weights, km.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_onnx_model_refuses_gradient_methods(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(20, 3)).astype("float32")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W"], ["z"])],
        "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 10])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 3])], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "lin.onnx")
    m = trustmap.load_model(tmp_path / "lin.onnx", output="logits")
    x = np.random.default_rng(1).normal(size=(2, 2, 10)).astype("float32")
    from trustmap.models import BLACK_BOX_METHODS

    for method in METHODS:
        if method in BLACK_BOX_METHODS:  # forward-only methods work on ONNX
            assert explain(m, x, method).maps.shape == x.shape
            continue
        with pytest.raises(UnsupportedError, match=", ".join(BLACK_BOX_METHODS)):
            explain(m, x, method)
    assert set(BLACK_BOX_METHODS) <= set(METHODS)


def test_input_and_target_errors():
    net = make_net(1, 3)
    x = make_x(1, 3)
    with pytest.raises(TargetError, match="0..2"):
        explain(net, x, "saliency", target=5)
    with pytest.raises(TargetError, match="3 targets"):
        explain(net, x, "gradcam", target=[0, 1])
    with pytest.raises(LayerError, match="no layer of that name"):
        explain(net, x, "gradcam", layer="conv9")
    with pytest.raises(LayerError, match="spatial"):
        explain(net, x, "gradcam", layer="9")  # the Linear head
    with pytest.raises(trustmap.errors.DataError, match="NaN"):
        explain(net, np.full_like(x, np.nan), "saliency")
    y = explain(net, torch.as_tensor(x), "saliency", target=np.int64(1))  # a tensor and a numpy int work
    assert y.maps.shape == x.shape and list(y.targets) == [1, 1, 1]


def test_trustmap_explain_is_the_entry_point():
    import importlib

    net = make_net(1, 1)
    x = make_x(1, 1)[:, 0]  # (N, L): no channel axis
    a = trustmap.explain(net, x, method="saliency", target=2)
    assert a.maps.shape == x.shape and a.layout == "NL" and list(a.targets) == [2, 2, 2]
    mod = importlib.import_module("trustmap.explain")  # the package is the same callable object
    assert trustmap.explain is mod and callable(mod)
    np.testing.assert_array_equal(mod(net, x, "saliency", target=2).maps, a.maps)
