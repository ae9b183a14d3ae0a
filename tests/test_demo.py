"""`trustmap demo` end to end with the smallest settings: every registered explainer, the
localizer, the scores and the report; other datasets, unlabeled data, the user's own files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from trustmap import datasets, workflows, zoo  # noqa: E402
from trustmap.cli import main  # noqa: E402
from trustmap.explain import list_methods  # noqa: E402
from trustmap.models import load_model  # noqa: E402
from trustmap.report import SYNTHESIS_METHODS, load_run  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--quick", "--quiet", "--out", str(out)])
    return out, rc, buf.getvalue()


@pytest.mark.slow
def test_demo_end_to_end(quick_run):
    out, rc, stdout = quick_run
    assert rc == 0
    report = out / "report.html"
    assert f"report: {report}" in stdout and report.is_file()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["format"] == "trustmap.run/2" and manifest["command"] == "demo"
    assert manifest["failures"] == []  # every step of the built-in run ran: the localizer, every explainer, scores
    assert manifest["labels"]["source"] == "dataset"
    for rel in ("model.safetensors", "model.json", "data.json", "report.json", "history.json", "samples.npz",
                "localizer/localizer.safetensors", "localizer/r2_path.json", "scores/scores.json"):
        assert (out / rel).is_file(), rel
    # every registered explainer ran (or is named in a note), plus the localizer's masks
    skipped = [n for n in manifest["notes"] if "was skipped" in n]
    ran = set(manifest["attributions"])
    assert "trust" in ran
    for name in list_methods():
        assert name in ran or any(n.startswith(f"{name} was skipped") for n in skipped), name
    scores = json.loads((out / "scores" / "scores.json").read_text())
    assert set(scores["methods"]) == ran - set(SYNTHESIS_METHODS)
    # the numbers are the model's: accuracy over the whole test split, predictions of the samples
    m = load_model(zoo.load(out / "model.safetensors"))
    test = datasets.load("mnist1d", split="test")
    acc = float(np.mean(m.predict(test.X, layout=test.layout) == test.y))
    assert json.loads((out / "report.json").read_text())["accuracy"] == pytest.approx(acc)
    run = load_run(out)
    np.testing.assert_array_equal(run.samples["X"], test.X[run.samples["index"]])
    np.testing.assert_array_equal(run.samples["y"], test.y[run.samples["index"]])
    data = json.loads((out / "data.json").read_text())
    assert data["class_counts"]["test"] == np.bincount(test.y, minlength=10).tolist()
    html = report.read_text()
    for name in ran:
        assert f'id="explain-{name.replace("_", "-")}"' in html


@pytest.mark.slow
def test_demo_reuses_the_cached_model(quick_run):
    out, rc, _ = quick_run
    assert rc == 0
    before = (out / "model.safetensors").stat().st_mtime_ns
    res = workflows.demo(out_dir=out, quick=True, methods="saliency", progress=False, report=False)
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert any("reused" in n for n in res.manifest["notes"])
    assert res.failures == []
    assert list(res.manifest["attributions"]) == ["trust", "saliency"]


@pytest.mark.slow
def test_demo_with_the_users_model_and_data_files(quick_run, tmp_path):
    out, rc, _ = quick_run
    test = datasets.load("mnist1d", split="test")
    np.savez(tmp_path / "mine.npz", X=test.X[:300], y=test.y[:300])
    run = tmp_path / "mine"
    res = workflows.demo(out_dir=run, model=out / "model.safetensors", data=tmp_path / "mine.npz", quick=True,
                         methods="saliency,gradcam", progress=False)
    assert res.report_path.is_file()
    m = load_model(zoo.load(out / "model.safetensors"))
    r = load_run(run)
    # 70/30 split of the file: the model report is on the 30%
    assert r.model_report.n == 90
    assert any("70/30" in n for n in res.manifest["notes"])
    np.testing.assert_array_equal(m.predict(r.samples["X"]), r.samples["pred"])
    assert res.manifest["model"]["fingerprint"] == m.fingerprint()


def test_unlabeled_ecg_without_a_model_is_a_clear_error(tmp_path, capsys):
    rc = main(["demo", "--dataset", "ecg208", "--quick", "--quiet", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "no labels" in err and "--model" in err


@pytest.mark.slow
def test_unlabeled_ecg_with_a_model_explains_its_predictions(tmp_path):
    import torch

    torch.manual_seed(0)
    net = zoo.build("mnist1d_cnn", n_classes=2, length=187)
    path = zoo.save(net, tmp_path / "beats.safetensors", classes=["N", "V"])
    res = workflows.demo(out_dir=tmp_path / "ecg", dataset="ecg208", model=path, quick=True,
                         methods="saliency", progress=False)
    run = load_run(tmp_path / "ecg")
    assert "y" not in run.samples and run.model_report is None
    assert any("no labels" in n for n in res.manifest["notes"])
    html = res.report_path.read_text()
    assert '<section id="model-report">' not in html and '<section id="explanations">' in html
    assert run.data["labeled"] is False and run.data["name"] == "ecg208"


@pytest.mark.slow
@pytest.mark.parametrize("dataset,epochs", [("digits", None), ("basicmotions", 10)])
def test_demo_on_images_and_multichannel_signals(dataset, epochs, tmp_path):
    # basicmotions: 2 quick epochs leave the FCN at chance, where the localizer (rightly) refuses; 10 learn it
    res = workflows.demo(out_dir=tmp_path / dataset, dataset=dataset, quick=True, methods="saliency,gradcam",
                         n_explain=12, progress=False, epochs=epochs)
    run = load_run(tmp_path / dataset)
    test = datasets.load(dataset, split="test")
    assert run.samples["X"].shape[1:] == test.X.shape[1:]
    assert run.attributions["saliency"].maps.shape == run.samples["X"].shape
    assert run.attributions["saliency"].layout == test.layout
    html = res.report_path.read_text()
    for sid in ("explanations", "class-averages", "scores"):
        assert f'<section id="{sid}">' in html
    assert re.search(r'<img src="data:image/png;base64,', html)
    assert res.failures == [] and '<section id="localizer">' in html
