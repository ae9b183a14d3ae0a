"""ModelReport numbers against scikit-learn, JSON round trips, and model_report on a torch model."""

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from trustmap import load_model
from trustmap.errors import DataError, RunDirError, ShapeError
from trustmap.metrics import ModelReport, model_report, report_from_scores, roc_auc, roc_curve

from conftest import assert_same_state, model_state


def check_against_sklearn(y, p, rep):
    """Every number of ``rep`` equals scikit-learn's on the same labels and scores."""
    k = p.shape[1]
    labels = list(range(k))
    pred = p.argmax(1)
    assert rep.n == len(y) and rep.n_classes == k
    assert rep.accuracy == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)

    np.testing.assert_array_equal(rep.confusion, skm.confusion_matrix(y, pred, labels=labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on absent classes; it still returns 0 rows
        cm_norm = skm.confusion_matrix(y, pred, labels=labels, normalize="true")
    np.testing.assert_allclose(rep.confusion_normalized, cm_norm, atol=1e-12)

    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(rep.precision, prec, atol=1e-12)
    np.testing.assert_allclose(rep.recall, rec, atol=1e-12)
    np.testing.assert_allclose(rep.class_accuracy, rec, atol=1e-12)
    np.testing.assert_allclose(rep.f1, f1, atol=1e-12)
    np.testing.assert_array_equal(rep.support, sup)
    for avg, got in (("macro", rep.macro), ("weighted", rep.weighted)):
        p_, r_, f_, _ = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        assert got["precision"] == pytest.approx(p_, abs=1e-12)
        assert got["recall"] == pytest.approx(r_, abs=1e-12)
        assert got["f1"] == pytest.approx(f_, abs=1e-12)

    present = [c for c in labels if 0 < (y == c).sum() < len(y)]
    for c in labels:
        if c in present:
            assert rep.roc_auc[c] == pytest.approx(skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
            fpr, tpr, thr = skm.roc_curve(y == c, p[:, c])
            np.testing.assert_allclose(rep.roc_curves[c]["fpr"], fpr, atol=1e-12)
            np.testing.assert_allclose(rep.roc_curves[c]["tpr"], tpr, atol=1e-12)
            np.testing.assert_array_equal(rep.roc_curves[c]["thresholds"], thr)
        else:
            assert np.isnan(rep.roc_auc[c])
    if len(present) == k:
        if k == 2:
            expected = skm.roc_auc_score(y, p[:, 1])
            assert rep.macro_roc_auc == pytest.approx(expected, abs=1e-12)
            assert rep.weighted_roc_auc == pytest.approx(expected, abs=1e-12)
        elif np.allclose(p.sum(1), 1):
            for avg, got in (("macro", rep.macro_roc_auc), ("weighted", rep.weighted_roc_auc)):
                assert got == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average=avg, labels=labels),
                                            abs=1e-12)
    if not present:
        assert np.isnan(rep.macro_roc_auc) and np.isnan(rep.weighted_roc_auc)
        return
    per_class = np.array([skm.roc_auc_score(y == c, p[:, c]) for c in present])
    sup_present = np.array([(y == c).sum() for c in present])
    assert rep.macro_roc_auc == pytest.approx(per_class.mean(), abs=1e-12)
    assert rep.weighted_roc_auc == pytest.approx(np.average(per_class, weights=sup_present), abs=1e-12)


def random_case(seed, k, n=150, signal=1.0, decimals=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + signal * np.eye(k)[y] * rng.uniform(0, 3, (n, 1))
    p = np.exp(logits)
    p /= p.sum(1, keepdims=True)
    if decimals is not None:
        p = np.round(p, decimals)  # many ties; rows still sum to ~1
    return y, p


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 6])
def test_random_predictions_match_sklearn(seed, k):
    y, p = random_case(seed, k)
    check_against_sklearn(y, p, report_from_scores(y, p))


@pytest.mark.parametrize("seed", range(3))
def test_tied_scores_match_sklearn(seed):
    y, p = random_case(seed, 4, n=120, decimals=1)
    assert len(np.unique(p[:, 0])) < 15  # the case really has ties
    rep = report_from_scores(y, p)
    check_against_sklearn(y, p, rep)


def test_all_scores_tied_gives_half():
    y = np.array([0, 1, 1, 0, 1, 0, 0])
    p = np.full((7, 2), 0.5)
    rep = report_from_scores(y, p)
    np.testing.assert_allclose(rep.roc_auc, [0.5, 0.5])
    check_against_sklearn(y, p, rep)


def test_known_small_auc_values():
    # the scikit-learn docs example: AUC 0.75; with a positive/negative tie counting one half
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.9]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert np.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[0] == np.inf


def test_rank_auc_equals_area_under_own_curve():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + y, 1)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert roc_auc(y, s) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)


def test_class_never_predicted_zero_division():
    y, p = random_case(3, 4, n=100)
    p[:, 2] = -1.0  # class 2 is never the argmax (scores need not be probabilities)
    rep = report_from_scores(y, p)
    assert rep.confusion[:, 2].sum() == 0 and rep.support[2] > 0
    assert rep.precision[2] == 0.0 and rep.recall[2] == 0.0 and rep.f1[2] == 0.0
    check_against_sklearn(y, p, rep)


def test_absent_class_is_nan_with_warning():
    y, p = random_case(4, 4, n=100)
    y[y == 1] = 0  # class 1 absent from the labels but still predicted sometimes
    assert (p.argmax(1) == 1).any()
    with pytest.warns(UserWarning, match="undefined.*1 \\(absent\\)"):
        rep = report_from_scores(y, p)
    assert np.isnan(rep.roc_auc[1]) and np.isfinite(rep.roc_auc[[0, 2, 3]]).all()
    np.testing.assert_array_equal(rep.confusion_normalized[1], 0.0)
    np.testing.assert_allclose(rep.confusion_normalized[[0, 2, 3]].sum(1), 1.0)
    check_against_sklearn(y, p, rep)


def test_only_one_class_present():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), 20)
    y = np.zeros(20, dtype=int)
    with pytest.warns(UserWarning, match="only class present"):
        rep = report_from_scores(y, p)
    assert np.isnan(rep.roc_auc).all() and np.isnan(rep.macro_roc_auc)
    check_against_sklearn(y, p, rep)


def test_binary_two_columns_one_column_and_one_hot_agree():
    y, p = random_case(11, 2, n=80)
    rep = report_from_scores(y, p)
    check_against_sklearn(y, p, rep)
    assert rep.roc_auc[0] == pytest.approx(rep.roc_auc[1])
    rep1 = report_from_scores(y, p[:, 1])  # 1-D: probability of class 1
    onehot = report_from_scores(np.eye(2, dtype=int)[y], p)
    for other in (rep1, onehot):
        np.testing.assert_allclose(other.roc_auc, rep.roc_auc, atol=1e-12)
        np.testing.assert_array_equal(other.confusion, rep.confusion)
        assert other.accuracy == rep.accuracy


def test_bad_inputs_raise_typed_errors():
    y, p = random_case(0, 3, n=10)
    with pytest.raises(DataError, match="out of range"):
        report_from_scores(np.r_[y[:-1], 3], p)
    with pytest.raises(ShapeError, match="one label per sample"):
        report_from_scores(y[:-1], p)
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        report_from_scores(y, bad)
    with pytest.raises(DataError, match="one-hot"):
        report_from_scores(np.full((10, 3), 0.5), p)
    with pytest.raises(DataError, match="whole numbers"):
        report_from_scores(y + 0.5, p)
    with pytest.raises(ShapeError, match="class name"):
        report_from_scores(y, p, class_names=["a", "b"])


def assert_reports_equal(a: ModelReport, b: ModelReport):
    for name in ("n", "n_classes", "class_names", "macro", "weighted"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("accuracy", "macro_roc_auc", "weighted_roc_auc", "class_accuracy", "roc_auc", "confusion",
                 "confusion_normalized", "precision", "recall", "f1", "support"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert len(a.roc_curves) == len(b.roc_curves)
    for ca, cb in zip(a.roc_curves, b.roc_curves):
        for key in ("fpr", "tpr", "thresholds"):
            np.testing.assert_array_equal(ca[key], cb[key])


def test_json_round_trip(tmp_path):
    y, p = random_case(5, 3, n=60, decimals=2)
    y[y == 2] = 1  # an absent class: NaN AUC, NaN curve, zero rows
    with pytest.warns(UserWarning):
        rep = report_from_scores(y, p, class_names=["N", "S", "V"])
    path = rep.save(tmp_path / "sub" / "report.json")
    assert path.exists()
    text = path.read_text()
    json.loads(text)
    json.dumps(rep.to_dict(), allow_nan=False)  # strict JSON: NaN/inf written as null
    back = ModelReport.load(path)
    assert_reports_equal(rep, back)
    assert back.roc_curves[0]["thresholds"][0] == np.inf
    assert not list(tmp_path.joinpath("sub").glob(".*"))  # no temporary files left


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(RunDirError, match="not a trustmap model report"):
        ModelReport.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{broken")
    with pytest.raises(RunDirError, match="corrupt"):
        ModelReport.load(tmp_path / "y.json")
    with pytest.raises(RunDirError, match="missing"):
        ModelReport.load(tmp_path / "none.json")


def test_summary_table():
    y, p = random_case(2, 3, n=50)
    rep = report_from_scores(y, p, class_names=["normal", "svt", "pvc"])
    text = rep.summary()
    assert f"accuracy: {rep.accuracy:.4f}" in text
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("svt "))
    fields = row.split()
    assert float(fields[1]) == pytest.approx(rep.precision[1], abs=5e-4)
    assert float(fields[3]) == pytest.approx(rep.f1[1], abs=5e-4)
    assert int(fields[-1]) == rep.support[1]
    assert "macro avg" in text and "weighted avg" in text and "confusion matrix" in text
    assert str(rep) == text


class TinyNet(torch.nn.Module):
    def __init__(self, channels=2, classes=3):
        super().__init__()
        self.conv = torch.nn.Conv1d(channels, 4, 5, padding=2)
        self.head = torch.nn.Linear(4, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(-1))


def test_model_report_on_torch_model_matches_scores():
    torch.manual_seed(0)
    net = TinyNet()
    before = model_state(net)
    rng = np.random.default_rng(0)
    x_ncl = rng.normal(size=(40, 2, 30)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    x_nlc = np.ascontiguousarray(np.moveaxis(x_ncl, 1, 2))  # the caller's layout: (N, L, C)
    rep = model_report(net, x_nlc, y, layout="NLC", class_names=["a", "b", "c"], batch_size=7)
    model_probs = load_model(net).probs(x_nlc, "NLC", batch_size=7)
    with torch.no_grad():  # independent: the module on the channels-first array
        direct = torch.softmax(net(torch.from_numpy(x_ncl)), 1).numpy()
    np.testing.assert_allclose(model_probs, direct, atol=1e-6)
    ref = report_from_scores(y, model_probs, class_names=["a", "b", "c"])
    assert_reports_equal(rep, ref)
    check_against_sklearn(y, model_probs.astype(np.float64), rep)
    whole = model_report(net, x_nlc, y, layout="NLC")  # default batching: same up to float rounding
    np.testing.assert_array_equal(whole.confusion, rep.confusion)
    np.testing.assert_allclose(whole.roc_auc, rep.roc_auc, atol=1e-6)
    assert_same_state(before, model_state(net))
