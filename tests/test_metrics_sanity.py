"""Randomization sanity checks: the similarity measures against SciPy / scikit-image, model- and
label-randomization on a trained CNN (model-dependent maps change; an edge detector does not and is
flagged), and the user's model left untouched."""

import numpy as np
import pytest
import torch

from conftest import assert_same_state, model_state
from trustmap import zoo
from trustmap.datasets import load
from trustmap.errors import InputError, ShapeError, UnsupportedError
from trustmap.explain import explain
from trustmap.metrics import (edge_detector, label_randomization, model_randomization, spearman_rows,
                              ssim_rows)

THRESHOLD = 0.5  # the stated threshold: a model-dependent map falls below it after full randomization


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(20, 1, 30)), 1)  # ties
    b = a + rng.normal(scale=0.5, size=a.shape)
    ours = spearman_rows(a, b)
    ref = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(20)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert np.isnan(spearman_rows(np.ones((1, 5)), rng.normal(size=(1, 5)))[0])


@pytest.mark.parametrize("shape", [(4, 1, 40), (3, 2, 16, 12), (2, 1, 5)])
def test_ssim_matches_skimage(shape):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.random(shape)
    b = a + rng.normal(scale=0.3, size=shape)
    ours = ssim_rows(a, b)
    win = min(7, *shape[2:])
    win -= 1 - win % 2
    for i in range(shape[0]):
        an = (a[i] - a[i].min()) / np.ptp(a[i])
        bn = (b[i] - b[i].min()) / np.ptp(b[i])
        ref = np.mean([structural_similarity(an[c], bn[c], data_range=1.0, win_size=win) for c in range(shape[1])])
        assert ours[i] == pytest.approx(ref, abs=1e-10)
    np.testing.assert_allclose(ssim_rows(a, a), 1.0)


@pytest.fixture(scope="module")
def cnn():
    tr, te = load("mnist1d", "train"), load("mnist1d", "test")
    torch.manual_seed(0)
    net = zoo.build("mnist1d_cnn")
    zoo.Trainer(**{**zoo.RECIPES["mnist1d_cnn"], "epochs": 5}, seed=0, progress=False).fit(net, tr.X, tr.y)
    return net, tr.X[:600], tr.y[:600], te.X[:150]


@pytest.mark.parametrize("method", ["gradcam", "saliency", "ablationcam"])
def test_model_dependent_maps_change(cnn, method):
    net, _, _, X = cnn
    before = model_state(net)
    r = model_randomization(net, X, method, threshold=THRESHOLD)
    assert_same_state(before, model_state(net))        # the user's network is never randomized
    assert r.stages[0] == "trained" and len(r.stages) == 5  # 3 convolutions + the linear head
    assert r.stages[1] == "+fc" and r.stages[-1] == "+conv1"  # output side first
    np.testing.assert_allclose(r.spearman[0], 1.0)
    final = r.final
    assert final["spearman"] < THRESHOLD and final["ssim"] < THRESHOLD, final
    assert r.mean("spearman")[1] < 0.9                  # already the head alone changes the maps
    assert not r.flagged
    lo, hi = r.ci("spearman")[-1]
    assert lo <= final["spearman"] <= hi and hi < THRESHOLD


def test_model_independent_map_is_flagged(cnn):
    net, _, _, X = cnn
    r = model_randomization(net, X, edge_detector, threshold=THRESHOLD)
    np.testing.assert_allclose(r.spearman, 1.0)
    np.testing.assert_allclose(r.ssim, 1.0)
    assert r.flagged
    assert "FLAGGED" in r.to_markdown() and r.to_dict()["flagged"] is True


def test_independent_randomization_and_attribution_input(cnn):
    net, _, _, X = cnn
    att = explain(net, X[:40], method="gradcam")
    r = model_randomization(net, X[:40], att, cascading=False)
    assert r.test == "independent" and r.stages[1:] == ["fc", "conv3", "conv2", "conv1"]
    # rerunning the attribution's own method reproduces its maps at the trained stage
    np.testing.assert_allclose(r.spearman[0], 1.0)
    assert (r.mean("spearman")[1:] < 1.0).all()


def test_label_randomization(cnn):
    net, Xtr, ytr, X = cnn
    g = label_randomization(net, Xtr, ytr, X, "gradcam", epochs=12, threshold=THRESHOLD)
    e = label_randomization(net, Xtr, ytr, X, edge_detector, epochs=1, threshold=THRESHOLD)
    assert g.stages == ["trained", "random labels"]
    assert g.extras["train_accuracy"] > 0.3           # it learned (memorized) the permuted labels
    assert g.final["spearman"] < THRESHOLD and not g.flagged
    assert e.flagged and e.final["spearman"] == pytest.approx(1.0)


def test_custom_fit_and_bad_input(cnn):
    net, Xtr, ytr, X = cnn
    calls = []

    def fit(module, Xf, yf):
        calls.append((len(Xf), float(np.mean(yf == ytr))))

    r = label_randomization(net, Xtr, ytr, X[:20], "saliency", fit=fit)
    assert calls and calls[0][0] == len(Xtr) and calls[0][1] < 0.5  # got the permuted labels
    assert r.final["spearman"] < THRESHOLD  # an untrained re-initialized copy
    with pytest.raises(ShapeError):
        label_randomization(net, Xtr, ytr[:10], X[:5], "saliency")
    with pytest.raises(InputError):
        model_randomization(net, X[:5], "gradcam", threshold=2)
    with pytest.raises(InputError, match="method"):
        model_randomization(net, X[:5], "gradcamm")
    with pytest.raises(ShapeError):
        model_randomization(net, X[:5], lambda m, x, t, lay: np.zeros((5, 3)))


def test_keras_model_randomization():
    from trustmap.models import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    km = keras.Sequential([keras.Input((32, 1)), keras.layers.Conv1D(4, 5, activation="relu"),
                           keras.layers.Flatten(), keras.layers.Dense(3)])
    X = np.random.default_rng(0).normal(size=(30, 32, 1)).astype("float32")
    w0 = [w.copy() for w in km.get_weights()]
    r = model_randomization(km, X, "saliency")
    for a, b in zip(w0, km.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(r.stages) == 3 and r.final["spearman"] < 0.9


def test_onnx_like_models_are_refused(cnn, monkeypatch):
    net, _, _, X = cnn
    from trustmap import load_model

    m = load_model(net)
    monkeypatch.setattr(m, "framework", "onnx")
    with pytest.raises(UnsupportedError):
        model_randomization(m, X[:5], edge_detector)
