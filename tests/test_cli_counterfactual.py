"""`trustmap counterfactual` on a Keras .h5 model built and trained here, an unlabeled .npy of inputs
and a reference .npy with its labels beside it: the counterfactuals flip the prediction, only the
reported window changes, the run folder is complete and `trustmap report` shows the section."""

import json

import numpy as np
import pytest

from trustmap.cli import main
from trustmap.data import make_synthetic
from trustmap.explain.counterfactual import Counterfactual


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import trustmap

    keras = trustmap.models.import_keras()
    keras.utils.set_random_seed(0)
    kw = dict(rank=1, size=64, channels=1, n_classes=2, distractor=True)
    tr, te = make_synthetic(300, seed=1, **kw), make_synthetic(12, seed=2, **kw)
    Xtr, Xte = np.moveaxis(tr.internal(), 1, -1), np.moveaxis(te.internal(), 1, -1)  # (N, L, 1): Keras' layout
    km = keras.Sequential([keras.Input((64, 1)), keras.layers.Conv1D(8, 5, activation="relu", padding="same"),
                           keras.layers.MaxPooling1D(2), keras.layers.Conv1D(8, 3, activation="relu", padding="same"),
                           keras.layers.Flatten(), keras.layers.Dense(2)])
    km.compile(optimizer=keras.optimizers.Adam(3e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    km.fit(Xtr, tr.y, epochs=8, batch_size=32, verbose=0)
    d = tmp_path_factory.mktemp("cf")
    km.save(d / "model.h5")
    np.save(d / "x.npy", Xte.astype("float32"))  # no labels
    np.save(d / "ref.npy", Xtr.astype("float32"))
    np.save(d / "ref_y.npy", tr.y)
    acc = (km.predict(Xte, verbose=0).argmax(1) == te.y).mean()
    assert acc >= 0.9, acc
    return d, Xte, Xtr, tr.y


def test_cli_counterfactual_flips_the_prediction_and_the_report_shows_it(files, capsys):
    d, Xte, Xtr, ytr = files
    out = d / "out"
    code = main(["counterfactual", "--model", str(d / "model.h5"), "--data", str(d / "x.npy"), "--reference",
                 str(d / "ref.npy"), "--reference-labels", str(d / "ref_y.npy"), "-o", str(out), "--json", "--quiet"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0, res
    assert res["n"] == len(Xte) and res["reference_labels"] == "file"
    assert res["success_rate"] >= 0.9
    cf = Counterfactual.load(out / "counterfactuals.npz")
    # binary task, target = the other class: the prediction flips wherever the target is reached
    assert (cf.target != cf.original_prediction).all()
    ok = cf.success
    np.testing.assert_array_equal(cf.new_prediction[ok], 1 - cf.original_prediction[ok])
    np.testing.assert_array_equal(res["new_prediction"], cf.new_prediction)
    assert ((cf.new_probability[ok] > 0.5) & (cf.new_probability[ok] <= 1)).all()
    # the changed region is the window: outside it the input, inside it the neighbour (a reference sample)
    X = np.moveaxis(Xte, -1, 1)
    np.testing.assert_array_equal(cf.x, X)
    np.testing.assert_array_equal(cf.counterfactuals[~cf.changed], X[~cf.changed])
    nun = np.moveaxis(Xtr, -1, 1)[cf.neighbour_index]
    np.testing.assert_array_equal(cf.counterfactuals[cf.changed], nun[cf.changed])
    np.testing.assert_array_equal(cf.changed[:, 0].sum(1), cf.window)
    assert (ytr[cf.neighbour_index] == cf.target).all()
    # the model on the saved counterfactuals gives the saved predictions (Keras layout N, L, C)
    import trustmap

    km = trustmap.load_model(d / "model.h5")
    np.testing.assert_array_equal(km.probs(np.moveaxis(cf.counterfactuals, 1, -1), layout="NLC").argmax(1),
                                  cf.new_prediction)
    rec = json.loads((out / "run.json").read_text())
    assert rec["command"] == "counterfactual" and rec["labels"]["source"] == "predictions"
    for f in rec["files"].values():
        assert (out / f).is_file()
    assert (out / "counterfactual_0.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["report", str(out), "--quiet"]) == 0
    html = (out / "report.html").read_text()
    assert '<section id="counterfactuals"><h2>Counterfactuals</h2>' in html
    sec = html.split('<section id="counterfactuals">')[1].split("</section>")[0]
    assert sec.count("<img ") == min(4, len(Xte))
    p0 = cf.new_probability[0]
    assert f"{p0:.3g}" in sec and "Shaded: the region copied" in sec


def test_cli_counterfactual_errors_exit_2_with_one_line(files, capsys, tmp_path):
    d, *_ = files
    base = ["counterfactual", "--model", str(d / "model.h5"), "--data", str(d / "x.npy"), "-o", str(tmp_path / "o")]
    assert main(base + ["--reference", str(d / "ref.npy"), "--reference-labels", str(d / "ref_y.npy"),
                        "--target", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target" in err
    assert main(base + ["--reference", str(d / "missing.npy")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # a reference of another sample length
    np.save(tmp_path / "short.npy", np.zeros((5, 32, 1), "float32"))
    assert main(base + ["--reference", str(tmp_path / "short.npy"), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.err.count("\n") == 1 and json.loads(cap.out)["error"]["parameter"] == "reference"
    # no reference labels: the model's predictions stand in (said in the record)
    assert main(base + ["--reference", str(d / "ref.npy"), "--target", "predicted"]) == 2
    assert "target" in capsys.readouterr().err
    assert main(base + ["--reference", str(d / "ref.npy"), "--quiet", "--n", "3", "--plots", "1"]) == 0
    rec = json.loads((tmp_path / "o" / "run.json").read_text())
    assert any("reference data have no labels" in n for n in rec["notes"]) and rec["n"] == 3
    # a corrupt counterfactuals file: the report names it, exit 2 and one line
    (tmp_path / "o" / "counterfactuals.npz").write_bytes(b"not a zip")
    assert main(["report", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "counterfactuals.npz" in err
