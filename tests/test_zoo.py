"""trustmap.zoo: the reference CNNs (torch and Keras twins) and safetensors save/load."""

import json
import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import trustmap
from trustmap import zoo
from trustmap.errors import InputError, ModelLoadError, UnsupportedError
from trustmap.models import TorchModel


def _randomize_bn(module, seed=0):
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return module.eval()


# ---- architectures -----------------------------------------------------------------------
def test_mnist1d_cnn_has_exactly_13960_parameters():
    m = zoo.mnist1d_cnn()
    per_layer = {n: sum(p.numel() for p in mod.parameters()) for n, mod in m.named_children()}
    assert per_layer["conv1"] == 150 and per_layer["conv2"] == 1900 and per_layer["conv3"] == 1900
    assert per_layer["fc"] == 10010
    assert zoo.n_parameters(m) == 13960
    assert [n for n, _ in m.named_children()] == ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3",
                                                 "flatten", "fc"]


@pytest.mark.parametrize("name,kwargs,x_shape,out_shape", [
    ("mnist1d_cnn", {}, (3, 1, 40), (3, 10)),
    ("mnist1d_cnn", {"n_classes": 4, "length": 64}, (2, 1, 64), (2, 4)),
    ("ecg_fcn", {}, (3, 12, 250), (3, 1)),
    ("ecg_fcn", {"in_channels": 3, "length": 50, "n_classes": 5}, (2, 3, 50), (2, 5)),
    ("mnist2d_cnn", {}, (2, 1, 28, 28), (2, 10)),
    ("mnist2d_cnn", {"size": (8, 8)}, (4, 1, 8, 8), (4, 10)),
    ("mnist2d_cnn", {"in_channels": 3, "size": (9, 12), "n_classes": 2}, (2, 3, 9, 12), (2, 2)),
])
def test_output_shapes_and_attributes(name, kwargs, x_shape, out_shape):
    m = zoo.build(name, **kwargs).eval()
    assert m.arch == name and m.input_shape == x_shape[1:]
    with torch.no_grad():
        assert m(torch.randn(x_shape)).shape == out_shape
    # config is JSON-ready and rebuilds the same network
    again = zoo.build(m.arch, **json.loads(json.dumps(m.config)))
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    assert again.input_shape == m.input_shape


def test_ecg_fcn_is_fully_convolutional_and_sees_the_layers():
    m = zoo.ecg_fcn().eval()
    with torch.no_grad():
        assert m(torch.randn(2, 12, 37)).shape == (2, 1)  # any length
    tm = trustmap.load_model(m)
    assert tm.default_layer() == "relu3"  # last conv block, after its BN and ReLU
    assert tm.n_classes == 2  # one logit unit is a two-class model
    kinds = [type(c).__name__ for c in m.children()]
    assert kinds.count("BatchNorm1d") == 3 and kinds[-1] == "Linear"


def test_same_padding_matches_keras_rule_for_even_kernel():
    """'same' pads (k-1)//2 on the left and the rest on the right (Keras/TF rule), also for k = 8."""
    conv = zoo.SameConv1d(2, 3, 8)
    x = torch.randn(4, 2, 21)
    want = F.conv1d(F.pad(x, (3, 4)), conv.weight, conv.bias)
    with torch.no_grad():
        got = conv(x)
    assert got.shape == (4, 3, 21)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_final_activation_option():
    x = torch.randn(3, 2, 20)
    torch.manual_seed(0)
    logits = zoo.ecg_fcn(in_channels=2, length=20, n_classes=4).eval()
    torch.manual_seed(0)
    soft = zoo.ecg_fcn(in_channels=2, length=20, n_classes=4, final_activation="softmax").eval()
    torch.manual_seed(0)
    sig = zoo.ecg_fcn(in_channels=2, length=20, final_activation="sigmoid").eval()
    with torch.no_grad():
        torch.testing.assert_close(soft(x), torch.softmax(logits(x), 1))
        assert ((sig(x) > 0) & (sig(x) < 1)).all()
    # trustmap strips the final softmax and gets the logits back
    tm = trustmap.load_model(soft)
    assert tm.final_activation == "softmax"
    np.testing.assert_allclose(tm.logits(x.numpy()), logits(x).detach().numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match="final_activation"):
        zoo.ecg_fcn(n_classes=1, final_activation="softmax")


def test_bad_arguments_raise_typed_errors():
    with pytest.raises(InputError, match="unknown architecture"):
        zoo.build("resnet")
    with pytest.raises(InputError, match="bad arguments"):
        zoo.build("mnist1d_cnn", width=3)
    with pytest.raises(InputError, match="size"):
        zoo.mnist2d_cnn(size=(5, 5))
    with pytest.raises(InputError, match="n_classes"):
        zoo.mnist1d_cnn(n_classes=0)


# ---- Keras twins ----------------------------------------------------------------------------
def _to_keras(torch_model, keras_model):
    """Copy a zoo torch model's weights into its Keras twin (channels-last)."""
    tsd = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    spatial_after = {}
    with torch.no_grad():  # shape entering each Linear, to permute the first Dense after Flatten
        x = torch.zeros((1, *torch_model.input_shape))
        for name, mod in torch_model.named_children():
            if isinstance(mod, torch.nn.Flatten):
                spatial_after["flat"] = tuple(x.shape[1:])
            x = mod(x)
    for layer in keras_model.layers:
        n = layer.name
        if n.startswith("conv"):
            w = tsd[f"{n}.weight"]
            axes = (2, 1, 0) if w.ndim == 3 else (2, 3, 1, 0)
            layer.set_weights([w.transpose(axes), tsd[f"{n}.bias"]])
        elif n.startswith("bn"):
            layer.set_weights([tsd[f"{n}.weight"], tsd[f"{n}.bias"], tsd[f"{n}.running_mean"], tsd[f"{n}.running_var"]])
        elif n.startswith("fc"):
            w = tsd[f"{n}.weight"]
            if "flat" in spatial_after and w.shape[1] == int(np.prod(spatial_after["flat"])):
                c, *sp = spatial_after["flat"]
                w = w.reshape(w.shape[0], c, *sp)
                w = np.moveaxis(w, 1, -1).reshape(w.shape[0], -1)  # channel-major -> channels-last flatten
            layer.set_weights([w.T, tsd[f"{n}.bias"]])


@pytest.mark.parametrize("name,kwargs,x_shape", [
    ("mnist1d_cnn", {}, (6, 40)),
    ("ecg_fcn", {"in_channels": 3, "length": 30}, (6, 30, 3)),
    ("ecg_fcn", {"in_channels": 2, "length": 25, "n_classes": 3}, (6, 25, 2)),
    ("mnist2d_cnn", {"size": (8, 8)}, (6, 8, 8)),
])
def test_keras_twins_compute_the_same_network(name, kwargs, x_shape):
    """Same weights in the torch model and its Keras twin give the same probabilities, and
    trustmap's view of the Keras model agrees with Keras' own predict within 1e-5."""
    pytest.importorskip("keras")
    torch.manual_seed(1)
    tm = _randomize_bn(zoo.build(name, **kwargs), 1)
    km = getattr(zoo, f"keras_{name}")(**kwargs)
    assert km.count_params() - sum(int(np.prod(w.shape)) for w in km.non_trainable_weights) == zoo.n_parameters(tm)
    _to_keras(tm, km)
    x = np.random.default_rng(0).normal(size=x_shape).astype(np.float32)
    p_keras = np.asarray(km.predict(x[..., None] if x.ndim == len(km.inputs[0].shape) - 1 else x, verbose=0))
    k = p_keras.shape[1]
    assert p_keras.shape == (len(x), kwargs.get("n_classes", 1 if name == "ecg_fcn" else 10))
    wrapped = trustmap.load_model(km)
    assert wrapped.final_activation == ("sigmoid" if k == 1 else "softmax")
    p_tm = wrapped.probs(x)
    np.testing.assert_allclose(p_tm[:, 1:] if k == 1 else p_tm, p_keras, atol=1e-5)
    # the torch twin
    p_torch = trustmap.load_model(tm).probs(x)
    np.testing.assert_allclose(p_torch, p_tm, atol=1e-5)


def test_keras_mnist1d_has_13960_parameters_and_2d_shapes():
    pytest.importorskip("keras")
    assert zoo.keras_mnist1d_cnn().count_params() == 13960
    km = zoo.keras_mnist2d_cnn()
    assert tuple(km.inputs[0].shape) == (None, 28, 28, 1) and tuple(km.outputs[0].shape) == (None, 10)
    x = np.random.default_rng(1).random((3, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(trustmap.load_model(km).probs(x), km.predict(x[..., None], verbose=0), atol=1e-5)
    fcn = zoo.keras_ecg_fcn()
    assert tuple(fcn.inputs[0].shape) == (None, 250, 12) and tuple(fcn.outputs[0].shape) == (None, 1)


# ---- save / load ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs,x_shape", [
    ("mnist1d_cnn", {}, (5, 1, 40)),
    ("ecg_fcn", {"in_channels": 3, "length": 30, "final_activation": "sigmoid"}, (5, 3, 30)),
    ("mnist2d_cnn", {"size": [8, 8]}, (5, 1, 8, 8)),
])
def test_save_load_is_bit_identical(tmp_path, name, kwargs, x_shape):
    torch.manual_seed(3)
    m = _randomize_bn(zoo.build(name, **kwargs), 3)
    hist = zoo.History(train_loss=[1.0, 0.5], train_acc=[0.5, 0.8], val_loss=[0.9, float("nan")],
                       val_acc=[0.6, 0.7], lr=[1e-3, 5e-4], best_epoch=0, stopped_early=True, seconds=1.5)
    path = zoo.save(m, tmp_path / "m.safetensors", history=hist, classes=["a", "b"], meta={"seed": 3})
    assert path == tmp_path / "m.safetensors" and (tmp_path / "m.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["m.json", "m.safetensors"]  # no temp files left
    m2 = zoo.load(path)
    assert type(m2) is type(m) and m2.arch == name and m2.input_shape == m.input_shape and not m2.training
    x = torch.randn(x_shape)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k]), k
    info = zoo.read_info(path)
    assert info["history"] == hist.to_dict() and info["history"]["val_loss"] == [0.9, None]
    assert zoo.History.from_dict(info["history"]).train_loss == hist.train_loss
    assert info["classes"] == ["a", "b"] and m2.classes == ["a", "b"]
    assert info["meta"] == {"seed": 3} and info["input_shape"] == list(m.input_shape)
    assert info["n_parameters"] == zoo.n_parameters(m) and len(info["weights_sha256"]) == 64
    assert "torch" in info["versions"]
    # the file is plain safetensors (no pickle) carrying the arch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["arch"] == name and set(f.keys()) == set(m.state_dict())


def test_directory_path_and_load_model(tmp_path):
    torch.manual_seed(0)
    m = zoo.mnist1d_cnn(n_classes=3, length=16).eval()
    out = zoo.save(m, tmp_path / "run")
    assert out == tmp_path / "run" / "model.safetensors" and (tmp_path / "run" / "model.json").exists()
    for p in (tmp_path / "run", out, tmp_path / "run" / "model.json"):
        wrapped = trustmap.load_model(p) if p.suffix != ".json" else TorchModel(zoo.load(p))
        assert isinstance(wrapped, TorchModel)
        x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
        with torch.no_grad():
            want = torch.softmax(m(torch.from_numpy(x)[:, None]), 1).numpy()
        np.testing.assert_allclose(wrapped.probs(x), want, rtol=0, atol=1e-7)
    wrapped = trustmap.load_model(out)
    assert wrapped.channels == 1 and wrapped.spatial == (16,) and wrapped.n_classes == 3


def test_load_errors_are_typed_and_name_the_file(tmp_path):
    torch.manual_seed(0)
    m = zoo.mnist1d_cnn(length=12)
    path = zoo.save(m, tmp_path / "cnn.safetensors")
    good = path.read_bytes()

    # corrupted weights: one byte flipped near the end (inside a tensor)
    bad = bytearray(good)
    bad[-5] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(ModelLoadError, match="sha256") as e:
        trustmap.load_model(path)
    assert str(path) in str(e.value)

    # truncated weights whose record was updated to match: safetensors refuses the bytes
    path.write_bytes(good[:40])
    info = json.loads((tmp_path / "cnn.json").read_text())
    import hashlib

    info["weights_sha256"] = hashlib.sha256(good[:40]).hexdigest()
    (tmp_path / "cnn.json").write_text(json.dumps(info))
    with pytest.raises(ModelLoadError, match="cannot load the weights"):
        zoo.load(path)
    path.write_bytes(good)
    info["weights_sha256"] = hashlib.sha256(good).hexdigest()

    # unknown arch
    (tmp_path / "cnn.json").write_text(json.dumps({**info, "arch": "vgg16"}))
    with pytest.raises(ModelLoadError, match="unknown architecture") as e:
        zoo.load(path)
    assert "cnn.json" in str(e.value) and "vgg16" in str(e.value)

    # config that does not fit the weights
    (tmp_path / "cnn.json").write_text(json.dumps({**info, "config": {**info["config"], "length": 13}}))
    with pytest.raises(ModelLoadError, match="cannot load the weights"):
        zoo.load(path)

    # corrupt JSON
    (tmp_path / "cnn.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt") as e:
        zoo.load(path)
    assert "cnn.json" in str(e.value)

    # missing JSON
    (tmp_path / "cnn.json").unlink()
    with pytest.raises(ModelLoadError, match="missing") as e:
        trustmap.load_model(path)
    assert "cnn.json" in str(e.value)

    # nothing there at all
    with pytest.raises(ModelLoadError, match="not found"):
        zoo.load(tmp_path / "nope.safetensors")
    # and the original file still loads once its record is back
    (tmp_path / "cnn.json").write_text(json.dumps(info))
    assert torch.equal(zoo.load(path).fc.weight, m.fc.weight)


def test_save_refuses_foreign_modules_and_bad_names(tmp_path):
    with pytest.raises(UnsupportedError, match="zoo models"):
        zoo.save(torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3)), tmp_path / "x.safetensors")
    with pytest.raises(InputError, match="file name"):
        zoo.save(zoo.mnist1d_cnn(), tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
