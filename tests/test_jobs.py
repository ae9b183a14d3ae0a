"""The one job pipeline's parts: method options, targets, labels/classes, and the engines giving the
same answers (in memory and streamed differ only in how chunks are scheduled)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import trustmap
from trustmap.cli import main
from trustmap.errors import InputError, ShapeError, TargetError
from trustmap.jobs import open_data, parse_params, parse_target
from trustmap.jobs.commands import explain
from trustmap.stream import read_maps


def net(c=1, k=3):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(c, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(4, k))


def test_param_strings_are_typed_and_checked_against_the_method(tmp_path):
    p = parse_params(["gradcam.per_channel=true", "lime.n_samples=1000", "gradcam.layer=conv2", "lime.kernel_width=.5"])
    assert p == {"gradcam": {"per_channel": True, "layer": "conv2"}, "lime": {"n_samples": 1000, "kernel_width": 0.5}}
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"lime": {"n_samples": 200, "seed": 3}}))
    assert parse_params(["lime.seed=4"], f) == {"lime": {"n_samples": 200, "seed": 4}}  # --param wins
    with pytest.raises(InputError, match="per_chanel") as e:
        parse_params(["gradcam.per_chanel=true"])
    assert e.value.parameter == "gradcam.per_chanel" and "per_channel" in e.value.expected
    with pytest.raises(InputError, match="METHOD.KEY=VALUE"):
        parse_params(["per_channel=true"])
    with pytest.raises(InputError, match="unknown explanation method"):
        parse_params(["gradcma.layer=x"])
    with pytest.raises(InputError, match="not run"):
        parse_params(["lime.seed=1"], methods=["gradcam"])


def test_one_target_parser(tmp_path):
    assert parse_target(None) is None and parse_target("predicted") is None and parse_target("pred") is None
    assert parse_target("label") == "label" and parse_target("2") == 2 and parse_target(np.int64(1)) == 1
    np.save(tmp_path / "t.npy", np.array([0, 2, 1]))
    (tmp_path / "t.txt").write_text("0\n2\n1\n")
    for f in ("t.npy", "t.txt"):
        np.testing.assert_array_equal(parse_target(str(tmp_path / f)), [0, 2, 1])
    with pytest.raises(TargetError, match="unknown target"):
        parse_target("largest")
    with pytest.raises(TargetError):
        parse_target(True)


def test_labels_and_classes_are_read_once_for_memory_and_stream(tmp_path):
    X = np.random.default_rng(0).normal(size=(12, 20)).astype("float32")
    np.save(tmp_path / "X.npy", X)
    names = np.array(["V", "N", "S"] * 4)
    (tmp_path / "y.txt").write_text("\n".join(names) + "\n")
    for stream in (False, True):
        src = open_data(str(tmp_path / "X.npy"), labels=str(tmp_path / "y.txt"), classes="N,S,V", stream=stream)
        assert src.labels_source == "file" and src.classes == ["N", "S", "V"]
        np.testing.assert_array_equal(src.y, [2, 0, 1] * 4)  # by the given class order, not sorted names
        src.close()
        bare = open_data(str(tmp_path / "X.npy"), stream=stream)
        assert bare.y is None and bare.labels_source is None
        bare.close()
    with pytest.raises(ShapeError):
        open_data(X, labels=np.arange(5))
    with pytest.raises(InputError, match="distinct"):
        open_data(X, classes="N,N")
    ds = open_data(dataset="mnist1d", split="test")
    assert ds.labels_source == "dataset" and ds.name == "mnist1d"


def test_memory_and_stream_engines_give_the_same_maps_with_the_same_chunks(tmp_path):
    X = np.random.default_rng(1).normal(size=(50, 32)).astype("float32")
    np.save(tmp_path / "X.npy", X)
    model = net()
    kw = dict(params={"smoothgrad": {"n_samples": 4}}, chunk_rows=16, plots=0)  # smoothgrad draws noise per chunk
    mem = explain(model, str(tmp_path / "X.npy"), "saliency,smoothgrad", tmp_path / "m", **kw)
    st = explain(model, str(tmp_path / "X.npy"), "saliency,smoothgrad", tmp_path / "s", engine="stream", **kw)
    for k in ("saliency", "smoothgrad"):
        a = trustmap.Attribution.load(mem["outputs"][k])
        maps, targets, _ = read_maps(st["outputs"][k])
        np.testing.assert_allclose(np.asarray(maps), a.maps, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(targets, a.targets)
    rec = json.loads((tmp_path / "m" / "run.json").read_text())
    assert rec["format"] == "trustmap.run/2" and rec["labels"]["source"] == "predictions"
    assert rec["data"]["fingerprint"] and rec["model"]["fingerprint"] and rec["params"]["smoothgrad"]["n_samples"] == 4


def test_a_plain_module_whose_classes_show_only_on_data_is_explained_from_a_file(tmp_path):
    """A fully convolutional module (no last Linear to read K from), passed as is: the job lets it see the
    data's first row, so an explicit class index is checked and the record names K."""
    X = np.random.default_rng(2).normal(size=(20, 1, 16)).astype("float32")
    np.save(tmp_path / "X.npy", X)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    for engine in ("memory", "stream"):
        res = explain(model, str(tmp_path / "X.npy"), "saliency", tmp_path / engine, target=2, engine=engine,
                      plots=0)
        rec = json.loads((tmp_path / engine / "run.json").read_text())
        assert rec["model"]["n_classes"] == 3 and res["n"] == 20
    with pytest.raises(TargetError):
        explain(model, str(tmp_path / "X.npy"), "saliency", tmp_path / "bad", target=3, plots=0)
    from trustmap.stream import choose_engine

    assert choose_engine(model, str(tmp_path / "X.npy"), ["saliency"], target=2)["engine"] in ("local", "ray")


def test_cli_param_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from trustmap import zoo

    torch.manual_seed(0)
    path = zoo.save(zoo.build("mnist1d_cnn", n_classes=3, length=40), tmp_path / "m.safetensors")
    np.save(tmp_path / "X.npy", np.zeros((4, 40), "float32"))
    rc = main(["explain", "--model", str(path), "--data", str(tmp_path / "X.npy"), "--method", "gradcam",
               "--param", "gradcam.per_chanel=true", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "gradcam.per_chanel" in err
    rc = main(["explain", "--model", str(path), "--data", str(tmp_path / "X.npy"), "--classes", "a,b",
               "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "3 names" in capsys.readouterr().err


def test_cli_target_file_and_predicted(tmp_path, capsys):
    from trustmap import zoo

    torch.manual_seed(0)
    path = zoo.save(zoo.build("mnist1d_cnn", n_classes=3, length=40), tmp_path / "m.safetensors")
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(5, 40)).astype("float32"))
    np.save(tmp_path / "t.npy", np.array([2, 0, 1, 1, 2]))
    base = ["explain", "--model", str(path), "--data", str(tmp_path / "X.npy"), "--method", "saliency", "--plots", "0",
            "--quiet", "--json"]
    assert main(base + ["--target", str(tmp_path / "t.npy"), "--out", str(tmp_path / "a")]) == 0
    assert trustmap.Attribution.load(tmp_path / "a" / "saliency.npz").targets.tolist() == [2, 0, 1, 1, 2]
    assert json.loads((tmp_path / "a" / "run.json").read_text())["target"].startswith("array:")
    assert main(base + ["--target", "predicted", "--out", str(tmp_path / "b")]) == 0
    pred = trustmap.load_model(path).predict(np.load(tmp_path / "X.npy"))
    assert trustmap.Attribution.load(tmp_path / "b" / "saliency.npz").targets.tolist() == pred.tolist()
    capsys.readouterr()
