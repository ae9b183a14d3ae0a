"""Native-Guide counterfactuals on a synthetic task with known class regions: the prediction flips to
the target, only a window copied from a real sample of the target class changes, the window lies on
that sample's class region; layouts, 2D, Keras, errors, the plot."""

import numpy as np
import pytest
import torch

import trustmap
from trustmap.data import make_synthetic
from trustmap.errors import InputError, TargetError

from test_explain_synthetic import fit, flat_cnn


@pytest.fixture(scope="module")
def task1d():
    kw = dict(rank=1, size=64, channels=2, n_classes=3, distractor=True)
    tr, te = make_synthetic(300, seed=1, **kw), make_synthetic(20, seed=2, **kw)
    net = fit(flat_cnn(1, 2, (64,)), tr.internal(), tr.y, epochs=8)
    return net, tr, te


def test_native_guide_flips_the_prediction_with_a_window_of_the_neighbour(task1d):
    net, tr, te = task1d
    X, R = te.internal(), tr.internal()
    cf = trustmap.counterfactual(net, X, reference=R, y_reference=tr.y, layout="NCL")
    assert cf.counterfactuals.shape == X.shape and cf.changed.shape == X.shape
    assert cf.success.mean() >= 0.9
    np.testing.assert_array_equal(cf.new_prediction[cf.success], cf.target[cf.success])
    assert (cf.target != cf.original_prediction).all()
    # outside the window: the input; inside: the neighbour (a real reference sample of the target class)
    nun = R[cf.neighbour_index]
    np.testing.assert_array_equal(cf.counterfactuals[~cf.changed], X[~cf.changed])
    np.testing.assert_array_equal(cf.counterfactuals[cf.changed], nun[cf.changed])
    assert (tr.y[cf.neighbour_index] == cf.target).all()
    # one contiguous window per sample, of the reported length, shared by the channels
    ch = cf.changed[:, 0]
    assert (cf.changed == cf.changed[:, :1]).all()
    np.testing.assert_array_equal(ch.sum(1), cf.window)
    assert all(np.all(np.diff(np.nonzero(r)[0]) == 1) for r in ch)
    # the copied window overlaps the neighbour's class region (where the target class's evidence is)
    region = tr.internal_mask()[cf.neighbour_index].any(1)
    ok = cf.success
    assert np.mean([(ch[i] & region[i]).any() for i in np.nonzero(ok)[0]]) >= 0.9
    # the counterfactual is much closer to the input than the neighbour is
    assert np.abs(cf.counterfactuals - X).sum() < 0.6 * np.abs(nun - X).sum()
    fig = cf.plot(0)
    assert len(fig.axes) == 2


def test_native_guide_targets_layouts_and_errors(task1d):
    net, tr, te = task1d
    X, R = te.internal()[:6], tr.internal()
    Xl, Rl = np.moveaxis(X, 1, -1), np.moveaxis(R, 1, -1)  # channels last
    a = trustmap.counterfactual(net, X, target=0, reference=R, y_reference=tr.y, layout="NCL")
    b = trustmap.counterfactual(net, Xl, target=0, reference=Rl, y_reference=tr.y, layout="NLC")
    np.testing.assert_array_equal(np.moveaxis(b.counterfactuals, -1, 1), a.counterfactuals)
    assert (a.target == 0).all()
    with pytest.raises(InputError, match="reference"):
        trustmap.counterfactual(net, X, layout="NCL")
    with pytest.raises(TargetError, match="no reference sample"):
        trustmap.counterfactual(net, X, target=2, reference=R[tr.y != 2], y_reference=tr.y[tr.y != 2],
                                layout="NCL")
    with pytest.raises(InputError, match="y_reference"):
        trustmap.counterfactual(net, X, reference=R, y_reference=tr.y[:5], layout="NCL")


def test_native_guide_2d_and_keras():
    kw = dict(rank=2, size=(16, 16), channels=1, n_classes=2, distractor=False)
    tr, te = make_synthetic(200, seed=1, **kw), make_synthetic(8, seed=2, **kw)
    net = fit(flat_cnn(2, 1, (16, 16), k=2), tr.internal(), tr.y, epochs=8)
    cf = trustmap.counterfactual(net, te.internal(), reference=tr.internal(), y_reference=tr.y, layout="NCHW")
    assert cf.success.mean() >= 0.75
    fig = cf.plot(1)
    assert len(fig.axes) == 3
    keras = trustmap.models.import_keras()
    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((32, 1)), keras.layers.Conv1D(4, 5, activation="relu", padding="same"),
                           keras.layers.Flatten(), keras.layers.Dense(2)])
    X = np.random.default_rng(0).normal(size=(5, 32, 1)).astype("float32")
    R = np.random.default_rng(1).normal(size=(40, 32, 1)).astype("float32")
    yr = km.predict(R, verbose=0).argmax(1)
    out = trustmap.counterfactual(km, X, reference=R, y_reference=yr)
    assert out.counterfactuals.shape == X.shape and out.layout == "NLC"
