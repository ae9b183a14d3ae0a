"""The commands compose on a user's own files: a Keras .h5 Conv1D model and unlabeled ECG beats (.npy)
through `explain` (Grad-CAM per channel, LIME) -> `locate` -> `evaluate` -> `report` of the three
folders, all from the CLI with --classes and --json; then the same with --labels in memory and with
--stream, which give the same numbers. The reports are opened in headless Chromium."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

sys.path.insert(0, str(Path(__file__).parent))
from chromium_cdp import Browser, find_or_install_chromium  # noqa: E402

from trustmap import Attribution, datasets  # noqa: E402
from trustmap.cli import main  # noqa: E402
from trustmap.models import import_keras, load_model  # noqa: E402
from trustmap.stream import read_maps  # noqa: E402

N = 96  # beats explained (few: LIME and the localizer run three times)


def rule_labels(X):
    """Three classes by the beat's energy (terciles): something a small CNN learns in a few epochs."""
    e = (X[..., 0] ** 2).sum(axis=1)
    return np.digitize(e, np.quantile(e, [1 / 3, 2 / 3])).astype(np.int64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras_beats")
    beats = datasets.load("ecg208", split="train").X  # (N, 187) real beats, unlabeled
    X = np.stack([beats, np.gradient(beats, axis=1) * 4], axis=-1).astype("float32")  # (N, 187, 2): NLC
    y = rule_labels(X)
    keras = import_keras()
    keras.utils.set_random_seed(0)
    L = keras.layers
    km = keras.Sequential([keras.Input((187, 2)), L.Conv1D(8, 7, padding="same", activation="relu", name="conv1"),
                           L.MaxPooling1D(2), L.Conv1D(8, 5, padding="same", activation="relu", name="conv2"),
                           L.GlobalAveragePooling1D(), L.Dense(3, activation="softmax")])
    km.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    km.fit(X[N:], y[N:], epochs=4, batch_size=32, verbose=0)
    km.save(d / "beats_cnn.h5")
    np.save(d / "beats.npy", X[:N])  # unlabeled: the beats only
    np.save(d / "y.npy", y[:N])
    return {"dir": d, "model": str(d / "beats_cnn.h5"), "X": str(d / "beats.npy"), "y": str(d / "y.npy"),
            "arrays": (X[:N], y[:N])}


def cli(capsys, *argv) -> dict:
    capsys.readouterr()
    rc = main(list(argv) + ["--json", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


def chain(capsys, files, out: Path, *extra) -> dict:
    """explain -> locate -> evaluate -> report through the CLI; every --json output parsed and checked."""
    common = ["--model", files["model"], "--data", files["X"], "--classes", "N,S,V", "--chunk-rows", "40", *extra]
    ex = cli(capsys, "explain", *common, "--method", "gradcam,lime", "--param", "gradcam.per_channel=true",
             "--param", "lime.n_samples=60", "--plots", "1", "--out", str(out / "ex"))
    assert ex["methods"] == ["gradcam", "lime"] and ex["n"] == N
    assert ex["params"]["gradcam"]["per_channel"] is True and ex["params"]["lime"]["n_samples"] == 60
    loc = cli(capsys, "locate", *common, "--epochs", "2", "--out", str(out / "loc"))
    assert isinstance(loc["tau"], float) and loc["tau"] > 0 and loc["n"] == N
    r2 = loc["r2"]
    assert all(isinstance(r2[k], float) for k in ("estimate", "low", "high")) and r2["low"] <= r2["high"]
    ev = cli(capsys, "evaluate", *common, "--explanations", str(out / "ex"), str(out / "loc"),
             "--metrics", "average_drop,increase_in_confidence,deletion", "--out", str(out / "ev"))
    cells = ev["scores"]["cells"]  # nested objects with numbers, not a repr string
    assert set(cells) == {"gradcam", "lime", "trust"} and ev["n_scored"] == N
    for meth in cells:
        for met in ("average_drop", "increase_in_confidence", "deletion"):
            c = cells[meth][met]
            assert isinstance(c["value"], float) and c["low"] <= c["value"] <= c["high"]
    rep = cli(capsys, "report", str(out / "ex"), str(out / "loc"), str(out / "ev"), "-o", str(out / "report.html"))
    assert rep["report"] == str(out / "report.html")
    records = {k: json.loads((out / k / "run.json").read_text()) for k in ("ex", "loc", "ev")}
    for rec in records.values():
        assert rec["format"] == "trustmap.run/2" and rec["classes"] == ["N", "S", "V"]
        assert rec["model"]["framework"] == "keras" and rec["data"]["n"] == N
    return {"explain": ex, "locate": loc, "evaluate": ev, "records": records}


@pytest.fixture(scope="module")
def runs(files, tmp_path_factory):
    capsys = _Capture()
    base = tmp_path_factory.mktemp("chains")
    return {name: chain(capsys, files, base / name, *extra) for name, extra in
            (("unlabeled", ()), ("labels", ("--labels", files["y"])),
             ("stream", ("--labels", files["y"], "--stream")))} | {"dir": base}


class _Capture:
    """capsys for a module fixture: redirect stdout/stderr around each call."""

    def readouterr(self):
        out = getattr(self, "_out", None)
        if out is None:
            import io

            self._out, self._err = io.StringIO(), io.StringIO()
            self._old = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = self._out, self._err
            return _Pair("", "")
        sys.stdout, sys.stderr = self._old
        pair = _Pair(self._out.getvalue(), self._err.getvalue())
        self._out = None
        return pair


class _Pair:
    def __init__(self, out, err):
        self.out, self.err = out, err


def test_unlabeled_beats_use_the_predictions_and_say_so(runs, files):
    r = runs["unlabeled"]
    for rec in r["records"].values():
        assert rec["labels"]["source"] == "predictions"
    assert r["locate"]["labels"] == "predictions" and r["evaluate"]["labels"] == "predictions"
    assert "accuracy" not in r["evaluate"]  # no labels, no model report
    # Grad-CAM per channel from the CLI: one map per lead, and the leads differ
    X, _ = files["arrays"]
    att = Attribution.load(runs["dir"] / "unlabeled" / "ex" / "gradcam.npz")
    assert att.maps.shape == X.shape and att.layout == "NLC"
    assert not np.allclose(att.maps[..., 0], att.maps[..., 1])
    m = load_model(files["model"])
    np.testing.assert_array_equal(att.targets, m.predict(X))


def test_labels_in_memory_and_streamed_give_the_same_numbers(runs, files):
    a, b = runs["labels"], runs["stream"]
    for rec in list(a["records"].values()) + list(b["records"].values()):
        assert rec["labels"] == {"source": "file", "path": files["y"]}
    assert b["records"]["ex"]["engine"] == "stream" and a["records"]["ex"]["engine"] == "memory"
    for meth in ("gradcam", "lime"):
        mem = Attribution.load(runs["dir"] / "labels" / "ex" / f"{meth}.npz")
        maps, targets, _ = read_maps(runs["dir"] / "stream" / "ex" / f"{meth}.npy")
        np.testing.assert_allclose(np.asarray(maps), mem.maps, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(targets, mem.targets)
    assert a["locate"]["tau"] == b["locate"]["tau"]
    for k in ("estimate", "low", "high"):
        assert a["locate"]["r2"][k] == pytest.approx(b["locate"]["r2"][k], abs=1e-9)
    X, y = files["arrays"]
    acc = float(np.mean(load_model(files["model"]).predict(X) == y))
    assert a["evaluate"]["accuracy"] == pytest.approx(acc) == pytest.approx(b["evaluate"]["accuracy"])
    assert a["evaluate"]["report"]["class_names"] == ["N", "S", "V"]
    ca, cb = a["evaluate"]["scores"]["cells"], b["evaluate"]["scores"]["cells"]
    for meth in ca:
        for met, cell in ca[meth].items():
            assert cell["value"] == pytest.approx(cb[meth][met]["value"], rel=1e-5, abs=1e-7), (meth, met)


def test_reports_of_the_three_folders_in_chromium(runs):
    path, why = find_or_install_chromium()
    if path is None:
        pytest.skip(f"headless Chromium is not available: {why}")
    pages = {k: runs["dir"] / k / "report.html" for k in ("unlabeled", "stream")}
    text = pages["unlabeled"].read_text()
    assert "no labels" in text and '<section id="localizer">' in text and '<section id="scores">' in text
    assert '<section id="explanations">' in text and '<section id="model-report">' not in text
    labeled = pages["stream"].read_text()
    assert '<section id="model-report">' in labeled and "<td>S</td>" in labeled
    with Browser(path) as b:
        for name, page in pages.items():
            res = b.open(page)
            assert res["errors"] == [], name
            assert [u for u in res["requests"] if not u.startswith(("file:", "data:", "about:"))] == [], name
            assert len(res["images"]) >= 6, name
            assert [i for i in res["images"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)] == [], name
