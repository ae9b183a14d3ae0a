"""`trustmap explain`, `locate` and `evaluate --explanations` chained on a trained MNIST-1D CNN."""

import json

import numpy as np
import pytest

from trustmap import Attribution, datasets
from trustmap.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--dataset", "mnist1d", "--out", str(out), "--quiet", "--json"]) == 0
    return out / "model.safetensors"


@pytest.mark.slow
def test_explain_locate_evaluate_chain(trained, tmp_path, capsys):
    capsys.readouterr()
    expl = tmp_path / "expl"
    assert main(["explain", "--model", str(trained), "--dataset", "mnist1d", "--n", "60",
                 "--method", "gradcam,saliency", "--out", str(expl), "--plots", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert sorted(res["methods"]) == ["gradcam", "saliency"]
    X, y = datasets.load("mnist1d", split="test")
    record = json.loads((expl / "run.json").read_text())
    assert record["data"]["name"] == "mnist1d" and record["labels"]["source"] == "dataset"
    att = Attribution.load(expl / "gradcam.npz")
    assert att.maps.shape == X[:60].shape and att.method == "gradcam"

    loc = tmp_path / "loc"
    assert main(["locate", "--model", str(trained), "--dataset", "mnist1d", "--epochs", "3",
                 "--out", str(loc), "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert 0 < res["tau"] and res["r2"]["low"] <= res["r2"]["estimate"] <= res["r2"]["high"]
    # fitted on the validation rows `trustmap train` set aside, not on the classifier's training rows
    hold = json.loads(trained.with_suffix(".json").read_text())["meta"]["holdout"]
    assert "validation rows" in res["fit_on"] and res["n"] == hold["n"] == len(hold["rows"]) > 0
    assert json.loads((loc / "run.json").read_text())["settings"]["fit_on"] == res["fit_on"]
    masks = Attribution.load(loc / "masks.npz")
    assert masks.maps.shape[1:] == X.shape[1:] and np.all((masks.maps >= 0) & (masks.maps < 1))

    scores = tmp_path / "scores"
    assert main(["evaluate", "--model", str(trained), "--dataset", "mnist1d", "--explanations", str(expl),
                 "--metrics", "average_drop,increase_in_confidence", "--out", str(scores), "--json"]) == 0
    json.loads(capsys.readouterr().out)
    table = json.loads((scores / "scores.json").read_text())
    assert set(table["cells"]) == {"gradcam", "saliency"}
    cell = table["cells"]["gradcam"]["average_drop"]
    assert cell["n"] == 60 and cell["low"] <= cell["value"] <= cell["high"]
    # the CLI's number is the library's number on the saved maps
    import trustmap

    direct = trustmap.metrics.average_drop(trained, X[:60], att.maps, target=att.targets, frac=0.3)
    assert abs(direct.value - cell["value"]) < 1e-9
    assert "average_drop" in (scores / "scores.md").read_text()


def test_explain_unknown_method_is_exit_2(trained, capsys):
    capsys.readouterr()
    assert main(["explain", "--model", str(trained), "--dataset", "mnist1d", "--method", "gradcma",
                 "--out", "/tmp/never"]) == 2
    err = capsys.readouterr().err
    assert "gradcam" in err and len(err.strip().splitlines()) == 1


def test_locate_objective_and_backbone_from_the_cli(trained, tmp_path, capsys):
    """`locate --objective preserve --backbone strided` reaches the Localizer (saved with the run) and the
    fitted masks keep their meaning (entries in [0, 1), the data's shape)."""
    from trustmap import Localizer

    loc = tmp_path / "loc"
    assert main(["locate", "--model", str(trained), "--dataset", "mnist1d", "--epochs", "2", "--tau", "4,12",
                 "--objective", "preserve", "--backbone", "strided", "--out", str(loc), "--quiet", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    fitted = Localizer.load(loc / "localizer.safetensors")
    assert fitted.objective == "preserve" and fitted.backbone_kind_ == "strided"
    assert res["tau"] in (4.0, 12.0)
    masks = Attribution.load(loc / "masks.npz")
    assert np.all((masks.maps >= 0) & (masks.maps <= 1))
    with pytest.raises(SystemExit) as err:
        main(["locate", "--model", str(trained), "--dataset", "mnist1d", "--backbone", "resnet", "--quiet"])
    assert err.value.code == 2
