"""Hostile inputs, as a new user would try them, against the API and the CLI.

Every case must end in the exact typed error (API) or in exit 2 with one line on stderr and, with
``--json``, a JSON error object on stdout (CLI) — never a traceback, never a silent answer — and
leave everything the user owns as it was: the torch model's weights, buffers, train/eval modes,
``requires_grad`` flags and hooks, the Keras model's weights, the global RNGs (torch, NumPy,
``random``) and Keras' process-wide safe-mode flag.

The Keras safe-mode tests (Lambda models with ``safe_mode=False`` load and explain; the global
flag is restored on success, failure and Ctrl-C; a later ``model_from_json`` of a Lambda config is
still refused) are at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap import errors as E
from trustmap.cli import main
from trustmap.explain import list_methods
from trustmap.models import import_keras
from trustmap.models.keras_model import keras_safe_mode

from conftest import model_state

keras = import_keras()
RNG = np.random.default_rng(0)
L = 16


# ---- what the user owns ------------------------------------------------------------------------
def _user_torch_net() -> nn.Module:
    """A tiny classifier in the state a user may leave it: training mode, a frozen layer, a hook."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        net[1].running_mean.copy_(torch.randn(4, generator=g) * 0.1)
    net.train()
    net[0].bias.requires_grad_(False)
    net[5].register_forward_hook(lambda mod, inp, out: None)
    return net


def _user_keras_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((L, 2))
    h = keras.layers.Conv1D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    out = keras.layers.Dense(3, activation="softmax", name="out")(h)
    return keras.Model(inp, out)


NET = _user_torch_net()
KMODEL = _user_keras_model()
X = RNG.normal(size=(5, 2, L)).astype("float32")      # (N, C, L) for NET
XK = np.moveaxis(X, 1, -1).copy()                      # (N, L, C) for KMODEL
Y = np.array([0, 1, 2, 0, 1])


def _snapshot() -> dict:
    return {"torch": model_state(NET), "keras": [w.copy() for w in KMODEL.get_weights()],
            "keras_act": KMODEL.get_layer("out").activation,
            "rng": (torch.get_rng_state().clone(), np.random.get_state(), random.getstate()),
            "safe_mode": keras_safe_mode()}


def _assert_unchanged(before: dict) -> None:
    after = _snapshot()
    b, a = before["torch"], after["torch"]
    assert b["training"] == a["training"] and b["requires_grad"] == a["requires_grad"] and b["hooks"] == a["hooks"]
    for k in b["weights"]:  # parameters and buffers (BatchNorm running stats, num_batches_tracked)
        assert torch.equal(b["weights"][k], a["weights"][k]), k
    assert all(np.array_equal(p, q) for p, q in zip(before["keras"], after["keras"]))
    assert after["keras_act"] is before["keras_act"]
    assert torch.equal(before["rng"][0], after["rng"][0]), "torch's global RNG moved"
    nb, na = before["rng"][1], after["rng"][1]
    assert nb[0] == na[0] and np.array_equal(nb[1], na[1]) and nb[2:] == na[2:], "numpy's global RNG moved"
    assert before["rng"][2] == after["rng"][2], "random's global state moved"
    assert after["safe_mode"] == before["safe_mode"], "Keras' safe-mode flag changed"


# ---- files a user may hand us ------------------------------------------------------------------
def _lambda_model():
    keras.utils.set_random_seed(2)
    inp = keras.Input((L, 2))
    h = keras.layers.Conv1D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.Lambda(lambda t: t * 2.0, name="double")(h)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    out = keras.layers.Dense(3, activation="softmax", name="out")(h)
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    f: dict[str, Path] = {"dir": d}
    rng = np.random.default_rng(3)
    Xd = rng.normal(size=(6, L)).astype("float32")
    yd = np.arange(6) % 3
    # a model file of our own (zoo) and one of someone else's (Keras, ONNX)
    from trustmap import zoo

    state = torch.get_rng_state()
    zm = zoo.mnist1d_cnn(n_classes=3, length=L, channels=4)
    torch.set_rng_state(state)
    zoo.save(zm, d / "m.safetensors")
    f["model"] = d / "m.safetensors"
    KMODEL.save(d / "k.keras")
    f["keras"] = d / "k.keras"
    lam = _lambda_model()
    lam.save(d / "lam.keras")
    lam.save(d / "lam.h5")
    f["lam_keras"], f["lam_h5"] = d / "lam.keras", d / "lam.h5"
    lam.save_weights(d / "w.weights.h5")
    f["weights_only"] = d / "w.weights.h5"
    (d / "weights_only.h5").write_bytes((d / "w.weights.h5").read_bytes())
    f["weights_only"] = d / "weights_only.h5"
    # corrupt and hostile files of every format we read
    def cut(src: Path, name: str, frac: float = 0.5) -> Path:
        b = src.read_bytes()
        (d / name).write_bytes(b[: int(len(b) * frac)])
        return d / name

    # data
    np.savez(d / "d.npz", X=Xd, y=yd)
    f["npz"] = d / "d.npz"
    np.save(d / "d.npy", Xd)

    import h5py
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({f"t{i}": Xd[:, i] for i in range(L)} | {"label": yd}), d / "d.parquet")
    f["trunc.parquet"] = cut(d / "d.parquet", "trunc.parquet")
    with h5py.File(d / "d.h5", "w") as h:
        h["X"], h["y"] = Xd, yd
    f["trunc_data.h5"] = cut(d / "d.h5", "trunc_data.h5", 0.4)
    (d / "bad.ts").write_bytes(b"@problemName x\n@data\n1,2,\xff\xfe:0\n")
    f["bad.ts"] = d / "bad.ts"
    for name in ("empty.npy", "empty.npz", "empty.csv", "empty.parquet", "empty.h5", "empty.keras", "empty.onnx"):
        (d / name).write_bytes(b"")
        f[name] = d / name
    f["trunc.npy"] = cut(d / "d.npy", "trunc.npy")
    f["trunc.npz"] = cut(d / "d.npz", "trunc.npz")
    f["trunc.keras"] = cut(d / "k.keras", "trunc.keras")
    f["trunc.h5"] = cut(d / "lam.h5", "trunc.h5", 0.3)
    f["trunc.safetensors"] = cut(d / "m.safetensors", "trunc.safetensors")
    (d / "trunc.json").write_text((d / "m.json").read_text())
    (d / "latin.csv").write_bytes("t0,t1,label\n1,2,caf\xe9\n3,4,th\xe9\n".encode("latin-1"))
    f["latin.csv"] = d / "latin.csv"
    (d / "header_only.csv").write_text("t0,t1,label\n")
    f["header_only.csv"] = d / "header_only.csv"
    (d / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    f["bad.parquet"] = d / "bad.parquet"
    (d / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n not really hdf5")
    f["bad.h5"] = d / "bad.h5"
    (d / "bad.onnx").write_bytes(b"not a protobuf")
    f["bad.onnx"] = d / "bad.onnx"
    np.savez(d / "pickle.npz", X=np.array([[1, "a"]], dtype=object), y=np.array([0]))
    f["pickle.npz"] = d / "pickle.npz"
    (d / "x.pt").write_bytes(b"")
    f["x.pt"] = d / "x.pt"
    (d / "afile").write_text("not a folder")
    f["afile"] = d / "afile"
    # our JSON records: an Attribution, then damaged copies
    a = trustmap.explain(trustmap.load_model(f["model"]), Xd, method="saliency")
    a.save(d / "att")
    (d / "att_bad.json").write_text((d / "att.json").read_text()[:40])
    (d / "att_bad.npz").write_bytes((d / "att.npz").read_bytes())
    f["att_bad"] = d / "att_bad.json"
    rec = json.loads((d / "att.json").read_text())
    rec["maps_sha256"] = "0" * 16
    (d / "att_tampered.json").write_text(json.dumps(rec))
    (d / "att_tampered.npz").write_bytes((d / "att.npz").read_bytes())
    f["att_tampered"] = d / "att_tampered.json"
    # explanations made for other data, for `evaluate --explanations`
    other = d / "other_expl"
    other.mkdir()
    trustmap.explain(trustmap.load_model(f["model"]), Xd + 1.0, method="saliency").save(other / "saliency")
    f["other_expl"] = other
    return f


# ---- the API catalogue ---------------------------------------------------------------------------
def _nan_net() -> nn.Module:
    net = _user_torch_net()
    with torch.no_grad():
        net[5].weight[0, 0] = float("nan")
    return net


class _SpatialOut(nn.Module):  # returns (N, K, L): not a classifier's output
    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(2, 3, 3, padding=1)

    def forward(self, x):
        return self.c(x)


class _ScalarOut(_SpatialOut):  # returns a 0-d tensor
    def forward(self, x):
        return self.c(x).sum()


_state = torch.get_rng_state()
NAN_NET, SPATIAL_NET, SCALAR_NET = _nan_net(), _SpatialOut(), _ScalarOut()
ZOO_NET = trustmap.zoo.mnist1d_cnn(n_classes=3, length=L, channels=2)
torch.set_rng_state(_state)


def _huge(x):
    """Finite float32 inputs whose logits overflow (the "inputs x 1e37" of a user's wrong scaling)."""
    return (np.sign(x) * np.float32(3e38)).astype("float32")


def _attr_for(x):
    return trustmap.explain(NET, x, method="saliency")


def _report(y, p=None):
    from trustmap.metrics import report_from_scores

    p = np.full((len(y) if np.ndim(y) else 3, 3), 1 / 3) if p is None else p
    return report_from_scores(y, p)


API = [
    # inputs: shapes, dtypes, non-finite values, empty
    ("x_nan", lambda f: trustmap.explain(NET, np.where(X > 1, np.nan, X), method="saliency"), E.DataError, "NaN"),
    ("x_inf", lambda f: trustmap.explain(NET, np.where(X > 1, np.inf, X), method="gradcam"), E.DataError, "NaN or Inf"),
    ("x_empty", lambda f: trustmap.explain(NET, X[:0], method="saliency"), E.DataError, "empty batch"),
    ("x_object", lambda f: trustmap.explain(NET, X.astype(object), method="saliency"), E.DataError, "not numeric"),
    ("x_bool_tensor", lambda f: trustmap.explain(NET, torch.ones(2, 2, L, dtype=torch.bool), method="saliency"),
     E.DataError, "real-valued"),
    ("x_complex", lambda f: trustmap.explain(NET, X.astype(np.complex64), method="saliency"), E.DataError,
     "not numeric"),
    ("x_strings", lambda f: trustmap.explain(NET, np.array([["a"] * L] * 2), method="saliency"), E.DataError,
     "not numeric"),
    ("x_ragged", lambda f: trustmap.explain(NET, [[0.0] * L, [0.0] * 3], method="saliency"), E.DataError, "ragged"),
    ("x_not_array", lambda f: trustmap.explain(NET, "x.npy", method="saliency"), E.DataError, "not an array"),
    ("x_rank_1", lambda f: trustmap.explain(NET, X[0, 0], method="saliency"), E.ShapeError, "x:"),
    ("x_rank_4", lambda f: trustmap.explain(NET, X[..., None], method="saliency"), E.ShapeError, "x:"),
    ("x_three_channels", lambda f: trustmap.explain(NET, RNG.normal(size=(2, 3, L)).astype("float32"),
                                                     method="saliency"), E.ShapeError, "x:"),
    ("x_wrong_layout", lambda f: trustmap.explain(NET, X, method="saliency", layout="NCHW"), E.ShapeError,
     "layout NCHW"),
    ("x_unknown_layout", lambda f: trustmap.explain(NET, X, method="saliency", layout="XYZ"), E.LayoutError,
     "layout"),
    ("x_keras_channels_first", lambda f: trustmap.explain(KMODEL, RNG.normal(size=(2, 3, L)).astype("float32"),
                                                           method="saliency"), E.ShapeError, "x:"),
    # non-finite scores: inputs that overflow, weights that are NaN
    *[(f"logits_overflow_{m}", (lambda m: lambda f: trustmap.explain(NET, _huge(X[:2]), method=m))(m),
       E.NonFiniteError, "NaN or Inf") for m in list_methods()],
    ("nan_weights", lambda f: trustmap.explain(NAN_NET, X, method="integrated_gradients"), E.NonFiniteError,
     "weights contain NaN"),
    ("nan_weights_probs", lambda f: trustmap.load_model(NAN_NET).probs(X), E.NonFiniteError, "weights"),
    ("evaluate_overflow", lambda f: trustmap.evaluate(NET, _huge(X[:2]), attributions={"s": np.ones((2, 2, L))},
                                                      metrics=["average_drop"], n_boot=100, n_perm=100),
     E.NonFiniteError, "NaN or Inf"),
    # outputs that are not (N, K)
    ("output_spatial", lambda f: trustmap.load_model(SPATIAL_NET, input_shape=(2, L)), E.ModelOutputError,
     "shape (2, 3, 16)"),
    ("output_spatial_probs", lambda f: trustmap.load_model(SPATIAL_NET).probs(X), E.ModelOutputError,
     "class scores"),
    ("output_scalar", lambda f: trustmap.load_model(SCALAR_NET).probs(X), E.ModelOutputError, "shape ()"),
    ("not_a_model", lambda f: trustmap.explain({"weights": 1}, X, method="saliency"), E.ModelLoadError,
     "cannot use this object"),
    # targets
    ("target_too_big", lambda f: trustmap.explain(NET, X, method="saliency", target=3), E.TargetError, "0..2"),
    ("target_negative", lambda f: trustmap.explain(NET, X, method="gradcam", target=-1), E.TargetError, "range"),
    ("target_length", lambda f: trustmap.explain(NET, X, method="saliency", target=[0, 1]), E.TargetError,
     "one target per sample"),
    ("target_fraction", lambda f: trustmap.explain(NET, X, method="saliency", target=1.5), E.TargetError, "int"),
    ("target_string", lambda f: trustmap.explain(NET, X, method="saliency", target="abc"), E.TargetError, "int"),
    # baselines: one specification everywhere
    ("ig_baseline_nan", lambda f: trustmap.explain(NET, X, method="integrated_gradients", baseline=float("nan")),
     E.InputError, "finite"),
    ("occlusion_baseline_inf", lambda f: trustmap.explain(NET, X, method="occlusion", baseline=np.inf),
     E.InputError, "finite"),
    ("lime_baseline_nan", lambda f: trustmap.explain(NET, X, method="lime", baseline=np.float32("nan")),
     E.InputError, "finite"),
    ("kernelshap_baseline_array_nan", lambda f: trustmap.explain(NET, X, method="kernelshap",
                                                                  baseline=np.full((2, L), np.nan)),
     E.InputError, "NaN or Inf"),
    ("ig_baseline_array_shape", lambda f: trustmap.explain(NET, X, method="integrated_gradients",
                                                            baseline=np.zeros((3, 7))), E.ShapeError, "baseline"),
    ("ig_baseline_unknown", lambda f: trustmap.explain(NET, X, method="integrated_gradients", baseline="black"),
     E.InputError, "unknown baseline"),
    ("ig_baseline_bool", lambda f: trustmap.explain(NET, X, method="integrated_gradients", baseline=True),
     E.InputError, "invalid baseline"),
    ("masking_baseline_nan", lambda f: trustmap.evaluate(NET, X, attributions={"s": np.ones_like(X)},
                                                         baseline=float("nan"), n_boot=100, n_perm=100),
     E.InputError, "finite"),
    # methods and parameters
    ("unknown_method", lambda f: trustmap.explain(NET, X, method="shap"), E.InputError,
     ", ".join(list_methods())),
    ("unknown_parameter", lambda f: trustmap.explain(NET, X, method="saliency", steps=3), E.InputError, "steps"),
    ("bad_n_steps", lambda f: trustmap.explain(NET, X, method="integrated_gradients", n_steps=0), E.InputError,
     "n_steps"),
    ("smoothgrad_n_samples_nan", lambda f: trustmap.explain(NET, X, method="smoothgrad", n_samples=float("nan")),
     E.InputError, "n_samples"),
    ("kernelshap_n_samples_nan", lambda f: trustmap.explain(NET, X, method="kernelshap", n_samples=float("nan")),
     E.InputError, "n_samples"),
    ("ig_seed_nan", lambda f: trustmap.explain(NET, X, method="integrated_gradients", seed=float("nan")),
     E.InputError, "seed"),
    ("ig_n_steps_huge", lambda f: trustmap.explain(NET, X, method="integrated_gradients", n_steps=10**9),
     E.InputError, "Gauss-Legendre"),
    ("occlusion_window_too_big", lambda f: trustmap.explain(NET, X, method="occlusion", window=100), E.ShapeError,
     "window"),
    ("scorecam_layer_float", lambda f: trustmap.explain(NET, X, method="scorecam", layer=3.5), E.LayerError,
     "named by a string"),
    ("gradcam_layer_unknown", lambda f: trustmap.explain(NET, X, method="gradcam", layer="conv9"), E.LayerError,
     "no layer of that name"),
    ("gradcam_layer_without_space", lambda f: trustmap.explain(NET, X, method="gradcam", layer="5"), E.LayerError,
     "spatial"),
    ("evaluate_seed_negative", lambda f: trustmap.evaluate(NET, X, attributions={"s": np.ones_like(X)}, seed=-1,
                                                           n_boot=100, n_perm=100), E.InputError, "seed"),
    ("evaluate_n_boot_small", lambda f: trustmap.evaluate(NET, X, attributions={"s": np.ones_like(X)}, n_boot=3),
     E.InputError, "n_boot"),
    ("attribution_save_under_file", lambda f: _attr_for(X).save(f["afile"] / "att"), E.InputError,
     "under a file"),
    # one sample, one class
    ("train_one_sample", lambda f: trustmap.zoo.Trainer(epochs=1, progress=False).fit(ZOO_NET, X[:1, :1], Y[:1]),
     E.DataError, "too few samples"),
    ("class_average_missing_class", lambda f: trustmap.explain.class_average(NET, X[:2], np.array([0, 0]),
                                                                           method="saliency", classes=[0, 2]),
     E.DataError, "no sample of class 2"),
    ("evaluate_r2_one_sample_labels", lambda f: trustmap.evaluate(NET, X[:1], np.array([5]),
                                                                  attributions={"s": np.ones_like(X[:1])},
                                                                  metrics=["r2"], n_boot=100, n_perm=100),
     E.TargetError, "0..2"),
    # evaluate: maps for other inputs, non-finite maps
    ("evaluate_other_data", lambda f: trustmap.evaluate(NET, X + 1, attributions={"s": _attr_for(X)},
                                                        n_boot=100, n_perm=100), E.DataError, "other inputs"),
    ("evaluate_nan_maps", lambda f: trustmap.evaluate(NET, X, attributions={"s": np.full_like(X, np.nan)},
                                                      n_boot=100, n_perm=100), E.DataError, "NaN or Inf"),
    ("evaluate_maps_shape", lambda f: trustmap.evaluate(NET, X, attributions={"s": np.ones((5, 2, 3))},
                                                        n_boot=100, n_perm=100), E.ShapeError, "shape of X"),
    # labels: one validator, one error type
    ("labels_nan", lambda f: _report(np.array([0, 1, np.nan])), E.LabelError, "NaN"),
    ("labels_fraction", lambda f: _report(np.array([0, 1, 1.5])), E.LabelError, "whole numbers"),
    ("labels_out_of_range", lambda f: _report(np.array([0, 1, 3])), E.LabelError, "out of range"),
    ("labels_strings", lambda f: _report(np.array(["a", "b", "c"])), E.LabelError, "not numeric"),
    ("labels_not_one_hot", lambda f: _report(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])), E.LabelError,
     "one-hot"),
    ("labels_length", lambda f: _report(np.array([0, 1]), np.full((3, 3), 1 / 3)), E.ShapeError,
     "one label per sample"),
    ("dataset_negative_label", lambda f: trustmap.datasets.from_arrays(X, np.array([0, 1, -1, 0, 1])),
     E.LabelError, "out of range"),
    ("class_average_bad_labels", lambda f: trustmap.explain.class_average(NET, X, np.array([0, 1, 7, 0, 1]),
                                                                        method="saliency"),
     E.LabelError, "out of range"),
    # data files of every format we read: datasets.read
    *[(f"read_{n.replace('.', '_')}", (lambda n: lambda f: trustmap.datasets.read(f[n]))(n), E.DataError, m)
      for n, m in (("empty.npy", "empty"), ("trunc.npy", "npy"), ("empty.npz", "empty"), ("trunc.npz", "truncated"),
                   ("latin.csv", "not UTF-8"), ("empty.csv", "empty"), ("header_only.csv", "no rows"),
                   ("bad.parquet", "Parquet"), ("empty.parquet", "Parquet"), ("bad.h5", "HDF5"),
                   ("empty.h5", "HDF5"), ("pickle.npz", "pickle"), ("trunc.parquet", "Parquet"),
                   ("trunc_data.h5", "HDF5"), ("bad.ts", ".ts"))],
    ("read_missing", lambda f: trustmap.datasets.read(f["dir"] / "nope.npz"), E.MissingFileError, "not found"),
    ("read_unknown_suffix", lambda f: trustmap.datasets.read(f["afile"]), E.InputError, "unknown data file type"),
    ("read_directory", lambda f: _dir_npz(f), E.InputError, "directory"),
    # the same files streamed
    *[(f"stream_{n.replace('.', '_')}", (lambda n: lambda f: trustmap.stream.open_source(f[n]))(n), E.DataError, m)
      for n, m in (("empty.npy", ".npy"), ("trunc.npy", "truncated"), ("latin.csv", "not UTF-8"),
                   ("empty.csv", "empty"), ("bad.parquet", "Parquet"), ("empty.h5", "HDF5"))],
    ("stream_labels_latin", lambda f: trustmap.stream.open_source(f["dir"] / "d.npy", labels=f["latin.csv"]),
     E.DataError, "not UTF-8"),
    # model files: corrupt, truncated, unsafe, not ours
    ("model_trunc_keras", lambda f: trustmap.load_model(f["trunc.keras"]), E.ModelLoadError, "cannot read"),
    ("model_empty_keras", lambda f: trustmap.load_model(f["empty.keras"]), E.ModelLoadError, "cannot read"),
    ("model_trunc_h5", lambda f: trustmap.load_model(f["trunc.h5"]), E.ModelLoadError, "cannot read"),
    ("model_empty_h5", lambda f: trustmap.load_model(f["empty.h5"]), E.ModelLoadError, "cannot read"),
    ("model_weights_only_h5", lambda f: trustmap.load_model(f["weights_only"]), E.ModelLoadError, "weights only"),
    ("model_bad_onnx", lambda f: trustmap.load_model(f["bad.onnx"]), E.ModelLoadError, "onnxruntime"),
    ("model_empty_onnx", lambda f: trustmap.load_model(f["empty.onnx"]), E.ModelLoadError, "onnxruntime"),
    ("model_trunc_safetensors", lambda f: trustmap.load_model(f["trunc.safetensors"]), E.ModelLoadError,
     "sha256"),
    ("model_missing", lambda f: trustmap.load_model(f["dir"] / "nope.keras"), E.ModelLoadError, "not found"),
    ("model_pt", lambda f: trustmap.load_model(f["x.pt"]), E.ModelLoadError, "weights_only=True"),
    ("model_unknown_suffix", lambda f: trustmap.load_model(f["afile"]), E.ModelLoadError, "unknown model file"),
    ("model_lambda_keras_safe", lambda f: trustmap.load_model(f["lam_keras"]), E.UnsafeModelError, "safe_mode=False"),
    ("model_lambda_h5_safe", lambda f: trustmap.load_model(f["lam_h5"]), E.UnsafeModelError, "Lambda"),
    # our JSON records
    ("record_truncated", lambda f: trustmap.Attribution.load(f["att_bad"]), E.RunDirError, "corrupt"),
    ("record_tampered", lambda f: trustmap.Attribution.load(f["att_tampered"]), E.RunDirError, "do not match"),
    ("record_missing", lambda f: trustmap.Attribution.load(f["dir"] / "nope.json"), E.RunDirError, "missing"),
]


def _dir_npz(f):
    p = f["dir"] / "folder.npz"
    p.mkdir(exist_ok=True)
    return trustmap.datasets.read(p)


@pytest.mark.parametrize("name,call,error,match", API, ids=[c[0] for c in API])
def test_api_hostile_input(name, call, error, match, files):
    import warnings

    before = _snapshot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            call(files)
    assert type(info.value) is error or issubclass(type(info.value), error)
    assert isinstance(info.value, E.TrustmapError)
    assert match in str(info.value), str(info.value)
    assert info.value.fix, "every error says how to fix it"
    _assert_unchanged(before)


# ---- the CLI catalogue ---------------------------------------------------------------------------
def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _explain(f, *extra, data="npz"):
    return ["explain", "--model", f["model"], "--data", f[data] if data in f else data, "--quiet",
            "--out", f["dir"] / "cli_out", *extra]


CLI = [
    # non-positive counts and a target that is not a class: usage errors
    ("n_zero", lambda f: _explain(f, "--n", "0"), "UsageError", "--n"),
    ("n_negative", lambda f: _explain(f, "--n", "-3"), "UsageError", "--n"),
    ("n_text", lambda f: _explain(f, "--n", "ten"), "UsageError", "--n"),
    ("plots_negative", lambda f: _explain(f, "--plots", "-1"), "UsageError", "--plots"),
    ("chunk_rows_zero", lambda f: _explain(f, "--stream", "--chunk-rows", "0"), "UsageError", "--chunk-rows"),
    ("workers_zero", lambda f: _explain(f, "--engine", "ray", "--workers", "0"), "UsageError", "--workers"),
    ("seed_negative", lambda f: _explain(f, "--seed", "-1"), "UsageError", "--seed"),
    ("locate_epochs_zero", lambda f: ["locate", "--model", f["model"], "--data", f["npz"], "--epochs", "0"],
     "UsageError", "--epochs"),
    ("demo_n_zero", lambda f: ["demo", "--quick", "--n", "0"], "UsageError", "--n"),
    ("train_batch_size_zero", lambda f: ["train", "--batch-size", "0"], "UsageError", "--batch-size"),
    ("target_abc", lambda f: _explain(f, "--target", "abc"), "UsageError", "--target"),
    ("target_negative", lambda f: _explain(f, "--target", "-2"), "UsageError", "--target"),
    # --out that cannot be a folder
    ("out_is_file", lambda f: _explain(f)[:-2] + ["--out", f["afile"]], "InputError", "is a file"),
    ("out_under_file", lambda f: _explain(f)[:-2] + ["--out", f["afile"] / "sub"], "InputError", "under a file"),
    # data files
    ("data_empty_npy", lambda f: _explain(f, data="empty.npy"), "DataError", "empty"),
    ("data_trunc_npz", lambda f: _explain(f, data="trunc.npz"), "DataError", "truncated"),
    ("data_latin_csv", lambda f: _explain(f, data="latin.csv"), "DataError", "not UTF-8"),
    ("data_latin_csv_stream", lambda f: _explain(f, "--stream", data="latin.csv"), "DataError", "not UTF-8"),
    ("data_missing", lambda f: _explain(f, data=str(f["dir"] / "nope.npz")), "MissingFileError", "not found"),
    ("evaluate_data_trunc_npz", lambda f: ["evaluate", "--model", f["model"], "--data", f["trunc.npz"]],
     "DataError", "truncated"),
    # model files
    ("model_trunc_safetensors", lambda f: ["explain", "--model", f["trunc.safetensors"], "--data", f["npz"],
                                           "--out", f["dir"] / "cli_out"], "ModelLoadError", "sha256"),
    ("model_lambda_h5", lambda f: ["evaluate", "--model", f["lam_h5"], "--data", f["npz"]], "UnsafeModelError",
     "safe_mode=False"),
    ("model_bad_onnx", lambda f: ["evaluate", "--model", f["bad.onnx"], "--data", f["npz"]], "ModelLoadError",
     "onnxruntime"),
    # methods and explanations
    ("method_unknown", lambda f: _explain(f, "--method", "shap"), "InputError", ", ".join(list_methods())),
    ("evaluate_other_explanations", lambda f: ["evaluate", "--model", f["model"], "--data", f["npz"],
                                               "--explanations", f["other_expl"]], "DataError", "other inputs"),
]


@pytest.mark.parametrize("name,argv,error,match", CLI, ids=[c[0] for c in CLI])
def test_cli_hostile_input(name, argv, error, match, files, capsys):
    before = _snapshot()
    args = argv(files)
    if "--quiet" not in args and args[0] != "report":
        args = args + ["--quiet"]  # progress bars on stderr are not part of the one-line error
    code, out, err = _cli(args, capsys)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    # with --json: the same error as a JSON object on stdout
    code, out, err = _cli(args + ["--json"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    obj = json.loads(out)["error"]
    assert obj["type"] == error and match in obj["message"]
    assert set(obj) == {"type", "parameter", "expected", "got", "fix", "message"}
    if error != "UsageError":
        assert obj["parameter"] and obj["fix"]
    _assert_unchanged(before)


def test_cli_ctrl_c_is_one_line_and_exit_130(files, capsys, monkeypatch):
    import trustmap.jobs.commands as commands

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "explain", interrupted)
    code, out, err = _cli(_explain(files), capsys)
    assert code == 130 and err.strip() == "trustmap explain: interrupted"


def test_cli_warnings_are_one_line(files, capsys, monkeypatch):
    import warnings

    import trustmap.jobs.commands as commands

    def warns(*a, **k):
        warnings.warn("something to know\nover two lines", UserWarning, stacklevel=2)
        raise KeyboardInterrupt  # stop right after the warning; the warning line comes first

    monkeypatch.setattr(commands, "explain", warns)
    code, out, err = _cli(_explain(files), capsys)
    assert code == 130 and err.strip().splitlines() == ["warning: something to know over two lines",
                                                        "trustmap explain: interrupted"]


def _sub(args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=str(Path(trustmap.__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=180, env=env, **kw)


def test_real_exit_codes_in_a_subprocess(files):
    """The exit codes users' scripts see: 2 for a usage error and for a typed error (one line, a JSON
    error object on stdout with --json), 130 for Ctrl-C with "rerun to resume" where the run resumes."""
    p = _sub(["-m", "trustmap.cli", *map(str, _explain(files, "--n", "0"))])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--n" in p.stderr
    p = _sub(["-m", "trustmap.cli", *map(str, _explain(files, "--json", data="latin.csv"))])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert json.loads(p.stdout)["error"]["type"] == "DataError"
    code = ("import sys, trustmap.cli as c, trustmap.jobs.commands as s\n"
            "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
            "s.explain = stop\n"
            f"sys.exit(c.main({[str(a) for a in _explain(files, '--stream')]!r}))\n")
    p = _sub(["-c", code])
    assert p.returncode == 130, p.stderr
    assert p.stderr.strip() == "trustmap explain: interrupted; rerun to resume" and "Traceback" not in p.stderr


def test_out_not_writable(files, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    ro = files["dir"] / "readonly"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o500)
    try:
        code, out, err = _cli(_explain(files)[:-2] + ["--out", ro / "sub"], capsys)
    finally:
        ro.chmod(0o700)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1


# ---- Keras safe mode -----------------------------------------------------------------------------
def _lambda_json() -> str:
    return _lambda_model().to_json()


def _assert_lambda_json_refused():
    with pytest.raises(Exception, match="(?i)lambda|unsafe|safe_mode"):
        keras.models.model_from_json(_lambda_json())


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unsafe_lambda_model_loads_and_explains_then_safe_mode_is_back(files, suffix):
    before = keras_safe_mode()
    _assert_lambda_json_refused()
    m = trustmap.load_model(files["lam_keras" if suffix == ".keras" else "lam_h5"], safe_mode=False)
    assert keras_safe_mode() == before
    # the answers are the file's model's: logits = its pre-softmax scores (2 x the conv features, pooled, dense)
    ref = keras.saving.load_model(files["lam_keras"], compile=False, safe_mode=False) if suffix == ".keras" else \
        keras.saving.load_model(files["lam_h5"], compile=False, safe_mode=False)
    assert keras_safe_mode() == before
    feats = keras.ops.convert_to_numpy(keras.Model(ref.inputs, ref.get_layer("gap").output)(XK))
    w, b = ref.get_layer("out").get_weights()
    np.testing.assert_allclose(m.logits(XK), feats @ w + b, rtol=1e-4, atol=1e-5)
    for method in ("saliency", "gradcam", "occlusion"):
        a = trustmap.explain(m, XK, method=method)
        assert a.maps.shape == XK.shape and np.isfinite(a.maps).all()
    assert keras_safe_mode() == before
    _assert_lambda_json_refused()  # a later, unrelated deserialization is still safe


def test_failed_and_interrupted_unsafe_loads_restore_safe_mode(files, tmp_path, monkeypatch):
    import h5py

    before = keras_safe_mode()
    # a real failure: a Lambda .h5 whose weights are gone
    broken = tmp_path / "broken.h5"
    broken.write_bytes(files["lam_h5"].read_bytes())
    with h5py.File(broken, "r+") as h:
        del h["model_weights"]
    with pytest.raises(E.ModelLoadError):
        trustmap.load_model(broken, safe_mode=False)
    assert keras_safe_mode() == before
    _assert_lambda_json_refused()
    # whatever keras does inside (here: switches unsafe deserialization on for the process, then fails
    # or is interrupted), the flag is what it was
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        def load(*a, exc=exc, **k):
            keras.config.enable_unsafe_deserialization()
            raise exc

        monkeypatch.setattr(keras.saving, "load_model", load)
        with pytest.raises((E.ModelLoadError, KeyboardInterrupt)):
            trustmap.load_model(files["lam_keras"], safe_mode=False)
        assert keras_safe_mode() == before
        _assert_lambda_json_refused()
    monkeypatch.undo()
    # a user who switched unsafe deserialization on themselves keeps their setting
    keras.config.enable_unsafe_deserialization()
    try:
        trustmap.load_model(files["keras"])
        assert keras_safe_mode() is False
    finally:
        from keras.src.backend.common import global_state

        global_state.set_global_attribute("safe_mode_saving", before)
    _assert_lambda_json_refused()


def test_tf_keras2_lambda_h5_loads_with_safe_mode_false():
    """The tf.keras 2 Lambda .h5 written by genuine tf.keras (tests/fixtures)."""
    before = keras_safe_mode()
    m = trustmap.load_model(Path(__file__).parent / "fixtures" / "keras2_lambda.h5", safe_mode=False)
    x = RNG.normal(size=(3, 40, 2)).astype("float32")
    assert trustmap.explain(m, x, method="gradcam").maps.shape == x.shape
    assert keras_safe_mode() == before
    _assert_lambda_json_refused()


def test_catalogue_size():
    assert len(API) + len(CLI) >= 60


def test_keras_model_that_cannot_be_cloned_runs_itself_and_is_restored():
    """A custom layer whose config cannot rebuild it: no private clone; the model itself is run, and
    every method leaves its weights, requires_grad flags and layer calls as they were."""

    class Scale(keras.layers.Layer):
        def __init__(self, fn, **kw):
            super().__init__(**kw)
            self.fn = fn

        def call(self, x):
            return x * self.fn(2.0)

        def get_config(self):
            raise NotImplementedError

    keras.utils.set_random_seed(4)
    inp = keras.Input((L, 2))
    h = keras.layers.Conv1D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = Scale(lambda v: v, name="scale")(h)
    h = keras.layers.GlobalAveragePooling1D(name="gap")(h)
    km = keras.Model(inp, keras.layers.Dense(3, name="out")(h))
    weights = [w.copy() for w in km.get_weights()]
    flags = [v.value.requires_grad for v in km.weights]
    ref = keras.ops.convert_to_numpy(km(XK))
    with pytest.warns(UserWarning, match="runs the model itself"):
        m = trustmap.load_model(km)
    assert not m.private_copy
    np.testing.assert_allclose(m.logits(XK), ref, rtol=1e-5, atol=1e-6)
    for method in ("saliency", "gradcam", "ablationcam", "guided_backprop"):
        a = trustmap.explain(m, XK, method=method)
        assert a.maps.shape == XK.shape and np.isfinite(a.maps).all() and np.abs(a.maps).sum() > 0
    assert [v.value.requires_grad for v in km.weights] == flags
    assert all(np.array_equal(p, q) for p, q in zip(weights, km.get_weights()))
    assert all("call" not in layer.__dict__ for layer in km.layers)  # no patched call left behind
    np.testing.assert_allclose(keras.ops.convert_to_numpy(km(XK)), ref)


def test_cli_unsafe_lambda_model_runs_and_leaves_safe_mode(files, capsys):
    """`--unsafe` (the user's opt-in) explains a Lambda .h5 and .keras from the command line; without
    it the same command is refused; Keras' flag is the same afterwards either way."""
    data = files["dir"] / "k.npz"
    np.savez(data, X=XK, y=Y)
    before = keras_safe_mode()
    for key in ("lam_h5", "lam_keras"):
        argv = ["explain", "--model", files[key], "--data", data, "--method", "saliency,gradcam", "--plots", "0",
                "--quiet", "--json", "--out", files["dir"] / f"cli_{key}"]
        code, out, err = _cli(argv, capsys)
        assert code == 2 and json.loads(out)["error"]["type"] == "UnsafeModelError"
        code, out, err = _cli(argv + ["--unsafe"], capsys)
        assert code == 0, err
        assert json.loads(out)["methods"] == ["saliency", "gradcam"]
        a = trustmap.Attribution.load(files["dir"] / f"cli_{key}" / "gradcam.npz")
        assert a.maps.shape == XK.shape and np.isfinite(a.maps).all()
        assert keras_safe_mode() == before
    _assert_lambda_json_refused()
