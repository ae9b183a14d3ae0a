"""``Localizer(objective='preserve')``: the smallest region whose keeping (the rest replaced by the
baseline) keeps the prediction, on synthetic tasks whose answer is known."""

import contextlib
import warnings

import numpy as np
import pytest
import torch

from trustmap import Localizer
from trustmap.localizer.tasks import distractor_task, multiclass_task, window_mass

from test_localizer import tiny_cnn, train

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def kept_inputs(loc, X):
    x = torch.from_numpy(X)
    d = torch.from_numpy(loc.masks(X))
    base = loc.base_stats_.train_mean
    return base + d * (x - base), base.expand_as(x)


def check(loc, net, te, classes):
    """Mass on the true region (samples that have one) and the prediction kept with the region alone."""
    has = np.flatnonzero(np.isin(te.y_clean, classes))
    sub = te.subset(has)
    masks = loc.locate(sub.X).internal()
    true = window_mass(masks, sub.centers, radius=10)
    dist_mass = window_mass(masks, sub.distractor, radius=10)["mass"].mean() if sub.distractor is not None else 0
    kept, base = kept_inputs(loc, te.X)
    with torch.no_grad():
        p = net(torch.from_numpy(te.X)).argmax(1)
        kept_agree = float((net(kept).argmax(1) == p).float().mean())
        base_agree = float((net(base).argmax(1) == p).float().mean())
    return true["mass"].mean(), dist_mass, kept_agree, base_agree


def test_preserve_keeps_the_class_bump_not_the_distractor():
    kw = dict(length=96, bump_at=60, distractor_at=20)
    tr, te = distractor_task(1200, seed=11, **kw), distractor_task(600, seed=111, **kw)
    net = train(tiny_cnn(1, 96, 2), tr.X, tr.y, epochs=6, seed=11)
    d = distractor_task(1500, seed=12, **kw)  # data the classifier did not train on
    with quiet():
        loc = Localizer(objective="preserve", epochs=8, n_boot=300, seed=0).fit(net, d.X, d.y)
    assert loc.settings_["objective"] == "preserve"
    mass, dist, kept, base = check(loc, net, te, [1])
    assert mass >= 0.9 and dist <= 0.05, (mass, dist)
    assert kept >= 0.97 and base <= 0.6, (kept, base)  # the region alone keeps it, the baseline alone does not
    # R² of the kept region: 1 - risk(kept) / risk(baseline alone), by hand on the held-out definition
    X, y = te.X[:400], te.y[:400]
    est = loc.r2(X, y)
    k, b = kept_inputs(loc, X)
    with torch.no_grad():
        def risk(z):
            return (1 - net(z).double().softmax(1)[torch.arange(len(y)), torch.from_numpy(y)]).mean().item()
        assert est.estimate == pytest.approx(1 - risk(k) / risk(b), rel=1e-6)
        assert est.clean_risk == pytest.approx(risk(k), rel=1e-6) and est.masked_risk == pytest.approx(risk(b), rel=1e-6)
    assert est.low <= est.estimate <= est.high
    # the path: R² of the kept region grows with tau (more is kept), and its meaning is recorded
    assert np.all(np.diff(loc.r2_path_.estimate) >= -1e-12) and loc.r2_path_.estimate[-1] > 0.5
    assert "kept" in loc.r2_meaning_
    # the 'auto' target: the whole input's R² on the same scale, 1 - risk(x) / risk(baseline alone)
    assert 0.5 < loc.target_r2_ < 1


def test_preserve_on_three_classes():
    kw = dict(length=96, positions=(20.0, 48.0, 76.0))
    tr, te = multiclass_task(1500, seed=7, **kw), multiclass_task(600, seed=107, **kw)
    net = train(tiny_cnn(1, 96, 3), tr.X, tr.y, epochs=8, seed=7)
    d = multiclass_task(1500, seed=8, **kw)
    with quiet():
        loc = Localizer(objective="preserve", epochs=10, n_boot=300, seed=1).fit(net, d.X, d.y)
    mass, _, kept, base = check(loc, net, te, [0, 1, 2])
    assert mass >= 0.9, mass
    assert kept >= 0.95 and base <= 0.5, (kept, base)
