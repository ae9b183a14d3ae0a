"""run_explain: one Attribution file per method plus PNG overlays, from objects or files."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from trustmap import Attribution
from trustmap.data import make_synthetic
from trustmap.errors import InputError
from trustmap.explain import explain
from trustmap.explain.runner import run_explain
from trustmap.models import import_keras

PNG = b"\x89PNG\r\n\x1a\n"


def small_net(c=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(c, 4, 5, padding=2), nn.ReLU(), nn.Conv1d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3))


def test_run_explain_writes_one_attribution_per_method_and_pngs(tmp_path):
    ds = make_synthetic(10, size=48, channels=3, seed=0)
    net = small_net()
    out = tmp_path / "run"
    written = run_explain(net, ds, "gradcam, saliency", out, plots=2, params={"saliency": {"absolute": False}})
    assert list(written) == ["gradcam", "saliency"]
    for method, paths in written.items():
        assert [p.name for p in paths] == [f"{method}.npz", f"{method}.json", f"{method}_0.png", f"{method}_1.png"]
        for p in paths:
            assert p.exists() and p.stat().st_size > 0
        assert paths[2].read_bytes()[:8] == PNG
        loaded = Attribution.load(paths[0])
        direct = explain(net, ds.X, method, layout=ds.layout, **({"absolute": False} if method == "saliency" else {}))
        np.testing.assert_allclose(loaded.maps, direct.maps, rtol=1e-6)
        np.testing.assert_array_equal(loaded.targets, direct.targets)
        assert loaded.layout == "NCL" and loaded.method == method
    assert loaded.params == {"absolute": False, "times_input": False}
    record = json.loads((out / "run.json").read_text())
    assert record["methods"] == ["gradcam", "saliency"] and record["n"] == 10
    assert record["format"] == "trustmap.run/2" and record["command"] == "explain"
    assert record["attributions"]["gradcam"] == "gradcam.npz" and record["files"]["gradcam_0"] == "gradcam_0.png"
    assert record["labels"]["source"] == "array" and record["model"]["fingerprint"]
    assert not list(out.glob(".*"))  # no temporary files left


def test_run_explain_from_files_keras_channels_last(tmp_path):
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    km = keras.Sequential([keras.Input((32, 2)), L.Conv1D(4, 3, padding="same", activation="relu", name="c1"),
                           L.GlobalAveragePooling1D(), L.Dense(3, activation="softmax")])
    km.save(tmp_path / "m.keras")
    X = np.random.default_rng(0).normal(size=(6, 32, 2)).astype("float32")
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(6) % 3)
    written = run_explain(tmp_path / "m.keras", tmp_path / "d.npz", ["guided_backprop"], tmp_path / "out",
                          target=1, n=4, plots=0)
    a = Attribution.load(written["guided_backprop"][0])
    assert len(written["guided_backprop"]) == 2  # no plots asked for
    assert a.maps.shape == (4, 32, 2) and a.layout == "NLC" and list(a.targets) == [1, 1, 1, 1]
    np.testing.assert_allclose(a.maps, explain(km, X[:4], "guided_backprop", target=1).maps, rtol=1e-5)


def test_run_explain_checks_everything_before_writing(tmp_path):
    ds = make_synthetic(4, size=32, channels=3, seed=0)
    out = tmp_path / "never"
    with pytest.raises(InputError, match="unknown explanation method"):
        run_explain(small_net(), ds, "gradcam,nosuch", out)
    with pytest.raises(InputError, match="not run"):
        run_explain(small_net(), ds, "gradcam", out, params={"saliency": {"absolute": False}})
    with pytest.raises(InputError, match="layer"):
        run_explain(small_net(), ds, "saliency", out, params={"saliency": {"layer": "0"}})
    with pytest.raises(InputError, match="no method"):
        run_explain(small_net(), ds, " , ", out)
    assert not out.exists()
