"""Localization metrics against a ground-truth region: hand-computed cases, scikit-learn's average
precision, and the oracle / random / reversed ordering on a model that reads one known region."""

import numpy as np
import pytest
import torch
from torch import nn

from trustmap import Attribution
from trustmap.errors import InputError, ShapeError
from trustmap.metrics import auprc, deletion, mass_inside, pointing_game, topk_iou
from trustmap.metrics.localization import average_precision_rows


def test_hand_computed():
    maps = np.array([[0.1, 0.9, 0.3, 0.2]])
    mask = np.array([[False, True, True, False]])
    assert pointing_game(maps, mask).value == 1
    assert mass_inside(maps, mask).value == pytest.approx(1.2 / 1.5)
    assert topk_iou(maps, mask).value == pytest.approx(1.0)          # k = |region| = 2
    assert topk_iou(maps, mask, k=3).value == pytest.approx(2 / 3)   # {1, 2, 3} vs {1, 2}
    assert topk_iou(maps, mask, frac=0.25).value == pytest.approx(1 / 2)
    assert auprc(maps, mask).value == pytest.approx(1.0)
    # the top entry outside the region: a miss, unless the tolerance reaches it
    off = np.array([[0.1, 0.2, 0.3, 0.9]])
    assert pointing_game(off, mask).value == 0
    assert pointing_game(off, mask, tolerance=1).value == 1
    # AP: ranking 3 (neg), 2 (pos), 1 (pos), 0 (neg): precisions at the positives 1/2, 2/3
    assert auprc(off, mask).value == pytest.approx((1 / 2 + 2 / 3) / 2)
    # signed maps: only the positive mass counts
    signed = np.array([[-1.0, 0.5, 0.5, 1.0]])
    assert mass_inside(signed, mask).value == pytest.approx(0.5)
    assert mass_inside(signed, mask, normalize="abs").value == pytest.approx(1 / 3)


def test_two_d_and_tolerance_along_both_axes():
    maps = np.zeros((1, 6, 6))
    maps[0, 4, 4] = 1.0
    mask = np.zeros((1, 6, 6), bool)
    mask[0, 2, 2] = True
    assert pointing_game(maps, mask, layout="NHW").value == 0
    assert pointing_game(maps, mask, layout="NHW", tolerance=1).value == 0
    assert pointing_game(maps, mask, layout="NHW", tolerance=2).value == 1


def test_average_precision_matches_sklearn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=(50, 30)), 1)  # many ties
    y = rng.random((50, 30)) < 0.3
    y[:, 0] = True
    ours = average_precision_rows(s, y)
    ref = [average_precision_score(y[i], s[i]) for i in range(50)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_empty_region_is_left_out():
    maps = np.array([[0.1, 0.9, 0.3, 0.2], [0.5, 0.1, 0.1, 0.1]])
    mask = np.array([[False, True, True, False], [False, False, False, False]])
    for fn in (pointing_game, mass_inside, topk_iou, auprc):
        r = fn(maps, mask)
        assert np.isnan(r.per_sample[1]) and r.extras["n_defined"] == 1
        assert r.value == pytest.approx(r.per_sample[0])


def test_region_shared_by_channels_and_channel_layouts():
    rng = np.random.default_rng(3)
    maps = rng.random((5, 3, 20))                      # NCL
    region = np.zeros((5, 20), bool)
    region[:, 5:9] = True
    full = np.broadcast_to(region[:, None], maps.shape)
    for fn in (pointing_game, mass_inside, topk_iou, auprc):
        a = fn(maps, region, layout="NCL").per_sample
        b = fn(maps, full, layout="NCL").per_sample
        np.testing.assert_allclose(a, b)
        att = Attribution(np.moveaxis(maps, 1, -1), np.zeros(5), "m", layout="NLC")
        c = fn(att, np.moveaxis(full, 1, -1)).per_sample   # the mask in the attribution's layout
        np.testing.assert_allclose(a, c)


@pytest.fixture(scope="module")
def region_model():
    """A network that reads one known region: a linear two-class model whose weights are zero outside
    positions 20..29 of a 64-long single-channel signal."""
    rng = np.random.default_rng(0)
    conv = nn.Conv1d(1, 2, kernel_size=64)
    w = np.zeros((2, 1, 64), dtype=np.float32)
    w[:, 0, 20:30] = rng.normal(size=(2, 10)) * 2
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        conv.bias.zero_()
    X = rng.normal(size=(200, 1, 64)).astype(np.float32)
    region = np.zeros(X.shape, bool)
    region[:, :, 20:30] = True
    return nn.Sequential(conv, nn.Flatten()).eval(), X, region, w


def test_oracle_random_reversed_ordering(region_model):
    net, X, region, w = region_model
    rng = np.random.default_rng(1)
    oracle = region.astype(np.float64) + 0.01 * rng.random(X.shape)
    random = rng.random(X.shape)
    reversed_ = -oracle
    kw = {"layout": "NCL"}
    scores = {name: {"pg": pointing_game(m, region, **kw).value,
                     "mass": mass_inside(m, region, normalize="minmax", **kw).value,
                     "iou": topk_iou(m, region, **kw).value, "ap": auprc(m, region, **kw).value}
              for name, m in (("oracle", oracle), ("random", random), ("reversed", reversed_))}
    o, r, v = scores["oracle"], scores["random"], scores["reversed"]
    assert o == {"pg": 1.0, "mass": pytest.approx(1.0, abs=0.05), "iou": 1.0, "ap": 1.0}
    assert v["pg"] == 0 and v["iou"] == 0 and v["mass"] < 0.01
    for key in o:
        assert o[key] > r[key] > v[key], key
    # random sits at the region's share (10 of 64) within sampling error
    assert abs(r["pg"] - 10 / 64) < 0.08 and abs(r["ap"] - 10 / 64) < 0.08
    # and the faithfulness of the same maps agrees: deleting the region first kills the evidence
    t = np.zeros(len(X), int)
    d = {n: deletion(net, X, m, target=t, output="logit").value for n, m in
         (("oracle", w[0] * X), ("random", random), ("reversed", -(w[0] * X)))}
    assert d["oracle"] < d["random"] < d["reversed"]


def test_bad_masks():
    maps = np.random.default_rng(0).random((2, 8))
    with pytest.raises(InputError, match="region"):
        pointing_game(maps, None)
    with pytest.raises(ShapeError) as e:
        mass_inside(maps, np.zeros((2, 7), bool))
    assert e.value.parameter == "mask"
    with pytest.raises(InputError, match="0/1"):
        auprc(maps, np.full((2, 8), 2))
    with pytest.raises(InputError):
        topk_iou(maps, np.zeros((2, 8), bool), k=3, frac=0.5)
    with pytest.raises(InputError):
        topk_iou(maps, np.ones((2, 8), bool), k=9)
    with pytest.raises(InputError):
        pointing_game(maps, np.ones((2, 8), bool), tolerance=-1)
