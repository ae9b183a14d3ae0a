"""The localizer on a user's own model and data (issue 14): no labels needed, an R² that does not
saturate when the classifier makes no error, and an interval that covers the R² on fresh data
when the localizer is fitted on data the classifier did not train on."""

import contextlib
import json
import warnings

import numpy as np
import pytest
import torch

from trustmap import Localizer
from trustmap.localizer import OptimisticFitWarning
from trustmap.localizer.tasks import distractor_task

from test_localizer import tiny_cnn, train

L = 64
TASK = dict(length=L, bump_at=40, distractor_at=14)
FIT = dict(epochs=5, batch_size=64, width=8, n_boot=400)
#: the class bump spans ~16 of the 64 samples: a path up to tau = 24 can remove it
COVER = dict(FIT, epochs=6, tau=[2.0, 4.0, 8.0, 12.0, 16.0, 24.0])


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def clean_classifier():
    """A classifier trained on 400 noise-free samples: accuracy 1.0 on its training data."""
    tr = distractor_task(400, seed=31, label_noise=0.0, **TASK)
    net = train(tiny_cnn(1, L, 2), tr.X, tr.y, epochs=12, seed=31)
    with torch.no_grad():
        assert (net(torch.from_numpy(tr.X)).argmax(1).numpy() == tr.y).mean() == 1.0
    return tr, net


def test_unlabeled_fit_without_calibration_errors_gives_a_proper_interval(clean_classifier, tmp_path):
    _, net = clean_classifier
    d = distractor_task(1000, seed=32, **TASK)  # unlabeled beats the classifier has not seen
    with quiet():
        loc = Localizer(seed=1, **FIT).fit(net, d.X)
    assert loc.labels_source_ == "predictions" and loc.r_metric_ == "prob"
    assert loc.fit_accuracy_ == 1.0  # its own predictions: no calibration error by construction
    est, low, high = loc.r2_
    assert 0.0 < low < est < high < 1.0 and high - low > 0.01, loc.r2_  # neither 0 [0, 0] nor 1 [1, 1]
    assert "predictions" in loc.r2_meaning_ and "held-out" in loc.r2_meaning_
    # the 0/1 error saturates on the same data: what the default avoids
    with quiet():
        acc = Localizer(seed=1, r_metric="acc", **FIT).fit(net, d.X)
    assert acc.r2_.clean_risk == 0 and acc.r2_.low == acc.r2_.high
    # the record says where the labels came from and what the R² means; load gives them back
    p = loc.save(tmp_path / "loc")
    rec = json.loads(p.with_suffix(".json").read_text())
    assert rec["labels_source"] == "predictions" and rec["r2_meaning"] == loc.r2_meaning_
    assert rec["r_metric"] == "prob"
    back = Localizer.load(tmp_path / "loc", model=net)
    assert back.labels_source_ == "predictions" and back.r2_meaning_ == loc.r2_meaning_
    att = back.locate(d.X[:5])
    assert att.extras["labels_source"] == "predictions" and att.extras["r2_meaning"] == loc.r2_meaning_
    # r2 without labels on new data uses the predictions too
    assert back.r2(d.X[:300]).metric == "prob"


def test_validation_accuracy_is_checked(clean_classifier):
    _, net = clean_classifier
    d = distractor_task(1000, seed=33, **TASK)
    with pytest.raises(ValueError, match="val_accuracy"):
        Localizer(**FIT).fit(net, d.X, d.y, val_accuracy=1.5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        Localizer(seed=2, **FIT).fit(net, d.X, d.y, val_accuracy=0.80)  # 0.97 here: far above 0.80
    assert any(issubclass(x.category, OptimisticFitWarning) for x in w)


@pytest.mark.slow
def test_interval_covers_the_fresh_r2_when_fitted_on_unseen_data(clean_classifier):
    """Repeated draws of the task: each fit's held-out interval against the R² the same localizer
    has on 12,000 fresh samples. Fitted on data the classifier did not see: covered in >= 90 % of
    the repeats and no warning; fitted on the classifier's training data: it warns."""
    tr, net = clean_classifier
    big = distractor_task(12000, seed=4000, **TASK)
    covered, widths, ests = [], [], []
    for r in range(20):
        d = distractor_task(1000, seed=4100 + r, **TASK)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            loc = Localizer(seed=r, **COVER).fit(net, d.X, d.y)
        assert not any(issubclass(x.category, OptimisticFitWarning) for x in w)
        truth = loc.r2(big.X, big.y).estimate
        covered.append(loc.r2_.low <= truth <= loc.r2_.high)
        widths.append(loc.r2_.high - loc.r2_.low)
        ests.append(loc.r2_.estimate)
    assert np.mean(covered) >= 0.9, (np.mean(covered), ests)
    assert np.median(widths) > 0.05 and np.median(ests) > 0.5  # a real interval on a real R²
    # the classifier's own training data: accuracy 1.0 there, the fit warns
    with pytest.warns(OptimisticFitWarning, match="did not train on"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="(?!the classifier scores)")
            Localizer(seed=0, **COVER).fit(net, tr.X, tr.y)
