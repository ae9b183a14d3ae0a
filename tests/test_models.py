"""Model adapters: predictions equal the framework's own, gradients flow, layouts, bad inputs."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.errors import (BackendError, DataError, LayerError, ModelLoadError, ShapeError, TargetError,
                             UnsafeModelError, UnsupportedError)
from trustmap.models import KerasModel, OnnxModel, TorchModel, import_keras

from conftest import assert_same_state, model_state

FIXTURES = Path(__file__).parent / "fixtures"


def keras_conv1d(n_classes=3, length=40, channels=2, seed=0):
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((length, channels)),
        keras.layers.Conv1D(6, 5, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv1D(6, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling1D(name="gap"),
        keras.layers.Dense(n_classes, activation="softmax", name="out"),
    ])


def torch_conv1d(channels=2, n_classes=3, final=None):
    torch.manual_seed(0)
    layers = [nn.Conv1d(channels, 6, 5, padding=2), nn.ReLU(), nn.Conv1d(6, 6, 3, padding=1), nn.ReLU(),
              nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(6, n_classes)]
    if final is not None:
        layers.append(final)
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def kmodel():
    return keras_conv1d()


@pytest.fixture(scope="module")
def xk():
    return np.random.default_rng(1).normal(size=(7, 40, 2)).astype("float32")


# ---------------------------------------------------------------- Keras files
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_keras_file_predictions_equal_keras(kmodel, xk, tmp_path, suffix):
    keras = import_keras()
    path = tmp_path / f"m{suffix}"
    kmodel.save(path)
    m = trustmap.load_model(path)
    assert isinstance(m, KerasModel) and m.final_activation == "softmax"
    own = keras.ops.convert_to_numpy(kmodel(xk, training=False))
    np.testing.assert_allclose(m.probs(xk), own, atol=1e-5)
    # logits are the pre-softmax scores of the last Dense
    feats = keras.Model(kmodel.inputs[0], kmodel.get_layer("gap").output)(xk)
    w, b = kmodel.get_layer("out").get_weights()
    np.testing.assert_allclose(m.logits(xk), keras.ops.convert_to_numpy(feats) @ w + b, atol=1e-5)


def test_tf_keras2_h5_file_loads_and_matches_tf_predictions():
    """A real .h5 written by tf.keras 2.21 (see tests/fixtures/make_keras2_h5.py)."""
    ref = np.load(FIXTURES / "keras2_conv1d_ref.npz")
    m = trustmap.load_model(FIXTURES / "keras2_conv1d.h5")
    np.testing.assert_allclose(m.probs(ref["x"]), ref["probs"], atol=1e-5)
    assert m.default_layer() == "conv2"


def test_keras_gradients_flow_to_input_and_layer(kmodel, xk):
    m = trustmap.load_model(kmodel)
    t, lay = m.to_internal(xk)
    assert lay.name == "NLC" and t.shape == (7, 2, 40)
    with m.frozen(), m.capture("conv1") as cap:
        t = t.clone().requires_grad_(True)
        z = m.logits_t(t)
        g_in, g_layer = torch.autograd.grad(z[:, 1].sum(), [t, cap.activation])
    assert cap.activation.shape == (7, 6, 40)  # (N, K, L): internal order even for channels-last Keras
    assert g_in.abs().sum() > 0 and g_layer.abs().sum() > 0
    # the input gradient agrees with a finite difference of the logit
    i, c, l = 3, 1, 17
    eps = 1e-2
    tp = t.detach().clone(); tp[i, c, l] += eps
    tm = t.detach().clone(); tm[i, c, l] -= eps
    with torch.no_grad():
        fd = (m.logits_t(tp)[i, 1] - m.logits_t(tm)[i, 1]) / (2 * eps)
    assert abs(float(fd) - float(g_in[i, c, l])) < 2e-3


def test_keras_user_model_is_untouched(kmodel, xk):
    keras = import_keras()
    before = [w.copy() for w in kmodel.get_weights()]
    calls = kmodel.get_layer("conv2").call
    m = trustmap.load_model(kmodel)
    with pytest.raises(RuntimeError):
        with m.capture("conv2"):
            m.logits(xk)
            raise RuntimeError("mid-way")
    assert kmodel.get_layer("conv2").call == calls
    assert "call" not in vars(m._clone.get_layer("conv2"))  # our clone's wrapper is gone too
    for a, b in zip(before, kmodel.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert kmodel.layers[-1].activation is keras.activations.softmax


def test_keras_capture_edit_changes_the_output(kmodel, xk):
    m = trustmap.load_model(kmodel)
    t, _ = m.to_internal(xk)
    with m.frozen(), torch.no_grad():
        base = m.logits_t(t)
        with m.capture("conv2", edit=lambda a: torch.zeros_like(a)):
            zeroed = m.logits_t(t)
    # with conv2 zeroed, the logits are the Dense bias alone
    bias = torch.from_numpy(kmodel.get_layer("out").get_weights()[1])
    assert torch.allclose(zeroed, bias.expand_as(zeroed), atol=1e-6)
    assert not torch.allclose(base, zeroed)


def test_keras_lambda_refused_under_safe_mode():
    with pytest.raises(UnsafeModelError, match="safe_mode=False"):
        trustmap.load_model(FIXTURES / "keras2_lambda.h5")


def test_truncated_h5_is_a_typed_error(tmp_path):
    data = (FIXTURES / "keras2_conv1d.h5").read_bytes()
    bad = tmp_path / "cut.h5"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="truncated"):
        trustmap.load_model(bad)


def test_keras_backend_clash_is_reported(monkeypatch):
    """keras already imported with another backend: a clear error, not a silent wrong backend."""
    import types

    fake = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(BackendError, match="KERAS_BACKEND=torch"):
        trustmap.load_model(FIXTURES / "keras2_conv1d.h5")


# ---------------------------------------------------------------- torch
def test_torch_predictions_and_gradients():
    net = torch_conv1d()
    m = trustmap.load_model(net)
    assert isinstance(m, TorchModel) and m.rank == 1 and m.channels == 2
    x = np.random.default_rng(2).normal(size=(5, 2, 30)).astype("float32")
    with torch.no_grad():
        own = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.logits(x), own, atol=1e-6)
    np.testing.assert_allclose(m.probs(x), torch.softmax(torch.from_numpy(own), 1).numpy(), atol=1e-6)
    t, _ = m.to_internal(x)
    with m.frozen(), m.capture("2") as cap:
        t.requires_grad_(True)
        z = m.logits_t(t)
        g_in, g_layer = torch.autograd.grad(z[:, 0].sum(), [t, cap.activation])
    assert g_in.shape == t.shape and g_in.abs().sum() > 0 and g_layer.abs().sum() > 0


def test_torch_final_softmax_is_stripped_for_logits():
    net = torch_conv1d(final=nn.Softmax(dim=1))
    m = trustmap.load_model(net)
    assert m.final_activation == "softmax"
    x = np.random.default_rng(3).normal(size=(4, 2, 30)).astype("float32")
    with torch.no_grad():
        pre = net[:-1](torch.from_numpy(x)).numpy()
        own = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.logits(x), pre, atol=1e-6)
    np.testing.assert_allclose(m.probs(x), own, atol=1e-6)
    assert len(net) == 8  # the user's Sequential keeps its Softmax


def test_single_sigmoid_output_is_a_two_class_model():
    net = torch_conv1d(n_classes=1, final=nn.Sigmoid())
    m = trustmap.load_model(net)
    x = np.random.default_rng(4).normal(size=(6, 2, 30)).astype("float32")
    with torch.no_grad():
        p1 = net(torch.from_numpy(x)).numpy()[:, 0]
    assert m.n_classes == 2
    np.testing.assert_allclose(m.probs(x), np.stack([1 - p1, p1], 1), atol=1e-6)


def test_probability_outputs_are_detected_with_a_warning():
    class Wrapped(nn.Module):  # softmax inside forward: not strippable
        def __init__(self):
            super().__init__()
            self.net = torch_conv1d()

        def forward(self, x):
            return torch.softmax(self.net(x), 1)

    w = Wrapped()
    m = trustmap.load_model(w)
    x = np.random.default_rng(5).normal(size=(6, 2, 30)).astype("float32")
    with pytest.warns(UserWarning, match="probabilities"):
        probs = m.probs(x)
    with torch.no_grad():
        np.testing.assert_allclose(probs, w(torch.from_numpy(x)).numpy(), atol=1e-6)
    assert m.output == "probs"


def test_torch_model_state_restored_after_errors():
    net = torch_conv1d()
    net.train()
    net[0].weight.requires_grad_(True)
    before = model_state(net)
    m = trustmap.load_model(net)
    x = np.random.default_rng(6).normal(size=(3, 2, 30)).astype("float32")
    with pytest.raises(RuntimeError):
        with m.frozen(), m.capture("1"):
            assert not net.training and not net[0].weight.requires_grad
            m.logits_t(m.to_internal(x)[0])
            raise RuntimeError("boom")
    assert_same_state(before, model_state(net))
    assert net.training


def test_default_layer_is_last_conv_after_its_activation():
    net = torch_conv1d()
    m = trustmap.load_model(net)
    with pytest.raises(Exception):
        m.layers()[0].output_shape[0]  # spatial size unknown before data is seen
    m.to_internal(np.zeros((1, 2, 30), "float32"))
    assert m.default_layer() == "3"  # ReLU after the second Conv1d
    shapes = {l.name: l.output_shape for l in m.layers()}
    assert shapes["2"] == (6, 30) and shapes["6"] == (3,)


def test_float64_runs_on_a_private_copy():
    net = torch_conv1d()
    m = trustmap.load_model(net, dtype=torch.float64)
    x = np.random.default_rng(7).normal(size=(2, 2, 30))
    assert m.logits(x).dtype == np.float64
    assert next(net.parameters()).dtype == torch.float32


# ---------------------------------------------------------------- ONNX
def _linear_onnx(path, w, b, batch="N"):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1),
         helper.make_node("Gemm", ["f", "W", "B"], ["z"]),
         helper.make_node("Softmax", ["z"], ["p"], axis=1)],
        "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 10])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def test_onnx_forward_matches_numpy_and_refuses_gradients(tmp_path):
    rng = np.random.default_rng(8)
    w = rng.normal(size=(20, 3)).astype("float32")
    b = rng.normal(size=3).astype("float32")
    path = tmp_path / "lin.onnx"
    _linear_onnx(path, w, b)
    m = trustmap.load_model(path)
    assert isinstance(m, OnnxModel) and not m.differentiable
    x = rng.normal(size=(4, 10, 2)).astype("float32")  # NLC in, converted to the graph's NCL
    z = np.moveaxis(x, -1, 1).reshape(4, -1) @ w + b
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    with pytest.warns(UserWarning, match="probabilities"):
        np.testing.assert_allclose(m.probs(x), p, atol=1e-5)
    t, _ = m.to_internal(x)
    with pytest.raises(UnsupportedError, match="forward-only method: .*lime.*occlusion"):
        m.logits_t(t.requires_grad_(True))


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_graph_with_a_fixed_batch_size_runs_any_number_of_rows(tmp_path, batch):
    """torch.onnx.export fixes the batch axis (to 1) unless told otherwise: such a file runs in blocks of that
    size (the last one padded), not into onnxruntime's raw shape error."""
    rng = np.random.default_rng(9)
    w = rng.normal(size=(20, 3)).astype("float32")
    b = rng.normal(size=3).astype("float32")
    path = tmp_path / "fixed.onnx"
    _linear_onnx(path, w, b, batch=batch)
    m = trustmap.load_model(path, output="probs")
    x = rng.normal(size=(7, 2, 10)).astype("float32")
    z = x.reshape(7, -1) @ w + b
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(m.probs(x, layout="NCL"), p, atol=1e-5)
    a = trustmap.explain(m, x[:5], "occlusion", layout="NCL")  # a black-box method: many batches of rows
    assert a.maps.shape == (5, 2, 10) and np.isfinite(a.maps).all()


# ---------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def tm():
    return trustmap.load_model(torch_conv1d(), input_shape=(2, 30))


def test_wrong_rank(tm):
    with pytest.raises(ShapeError, match="x:"):
        tm.logits(np.zeros((2, 2, 30, 1), "float32"))


def test_nan_and_inf(tm):
    x = np.zeros((3, 2, 30), "float32")
    x[1, 0, 5] = np.nan
    with pytest.raises(DataError, match=r"index \(1, 0, 5\)"):
        tm.logits(x)
    x[1, 0, 5] = np.inf
    with pytest.raises(DataError, match="NaN or Inf"):
        tm.logits(x)


def test_empty_batch(tm):
    with pytest.raises(DataError, match="empty batch"):
        tm.logits(np.zeros((0, 2, 30), "float32"))


def test_object_dtype(tm):
    with pytest.raises(DataError, match="astype"):
        tm.logits(np.array([[["a"] * 30] * 2], dtype=object))


def test_channel_count_mismatch(tm):
    with pytest.raises(ShapeError, match="channel"):
        tm.logits(np.zeros((2, 5, 30), "float32"))


def test_target_out_of_range(tm):
    with pytest.raises(TargetError, match="classes 0..2"):
        tm.resolve_targets(7, n=4)
    with pytest.raises(TargetError, match="4 targets"):
        tm.resolve_targets([0, 1], n=4)
    np.testing.assert_array_equal(tm.resolve_targets(2, n=3), [2, 2, 2])


def test_unknown_layer(tm):
    with pytest.raises(LayerError, match="layers"):
        with tm.capture("conv99"):
            pass


def test_unknown_file_type(tmp_path):
    with pytest.raises(ModelLoadError, match=".keras, .h5, .onnx"):
        trustmap.load_model(tmp_path / "model.bin")


def test_import_trustmap_first_starts_keras_on_torch_and_keeps_a_users_choice():
    """``import trustmap`` before ``import keras`` gives Keras the torch backend (no variable set by hand);
    a backend the user set is left as it was."""
    import subprocess

    code = "import os, trustmap, keras; print(keras.backend.backend(), os.environ['KERAS_BACKEND'])"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["torch", "torch"]
    code = "import os, trustmap; print(os.environ['KERAS_BACKEND'])"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "KERAS_BACKEND": "jax"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "jax"
