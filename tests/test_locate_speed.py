"""The fast ``locate`` path (issue 14): the 'strided' backbone localizes the distractor task as the
U-Net does, the inference path gives the plain eager masks, the user's model is untouched, and records
saved with ``backbone=None`` still load as the U-Net. Correctness only: the speed is measured in
benchmarks/bench_locate.py."""

import json
import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import assert_same_state, model_state
from trustmap import Localizer
from trustmap.localizer import estimator as E
from trustmap.localizer.model import (BACKBONES, MaskNet, StridedBackbone, UNetBackbone, default_backbone_kind,
                                      masks_from_probs)
from trustmap.localizer.tasks import distractor_task, window_mass

from test_localizer import tiny_cnn, train


@pytest.fixture(scope="module")
def beats():
    """The distractor task on 187-sample beats: a classifier, data it did not train on, fresh test beats."""
    tr = distractor_task(1500, seed=21)
    torch.manual_seed(21)  # the classifier's initial weights, whatever ran before
    net = train(tiny_cnn(1, 187, 2), tr.X, tr.y, epochs=6, seed=21)
    return net, distractor_task(2000, seed=22), distractor_task(400, seed=23)


@pytest.fixture(scope="module")
def fitted(beats):
    net, fit_data, _ = beats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Localizer(backbone="strided", epochs=10, n_boot=200, seed=0).fit(net, fit_data.X, fit_data.y)


def test_backbone_names_and_default():
    for objective in ("remove", "prior", "preserve"):
        assert default_backbone_kind("trust", objective) == "unet"
        assert default_backbone_kind("trust", objective, (96,)) == "unet"  # short signals, MNIST-1D, 28x28
        assert default_backbone_kind("trust", objective, (28, 28)) == "unet"
    # beats of 187 samples: the fast network for the removal objectives, the U-Net to keep ('preserve')
    assert default_backbone_kind("trust", "remove", (187,)) == "strided"
    assert default_backbone_kind("trust", "prior", (187,)) == "strided"
    assert default_backbone_kind("trust", "preserve", (187,)) == "unet"
    assert default_backbone_kind("paper", "paper") == "paper"
    assert default_backbone_kind("paper", "paper", (187,)) == "paper"
    assert {"strided", "unet", "dilated", "paper"} <= set(BACKBONES)


def test_strided_backbone_shapes_and_coordinates():
    for shape in ((3, 2, 187), (2, 1, 96), (2, 1, 5), (2, 3, 13, 17), (2, 1, 24, 24), (1, 1, 6, 7, 9)):
        net = StridedBackbone(len(shape) - 2, shape[1], 1).eval()
        x = torch.randn(*shape)
        with torch.no_grad():
            out = net(x)
            assert out.shape == (shape[0], 1) + shape[2:]
            # the coordinate part is added without concatenating: same as the stem on cat([x, coords])
            grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in shape[2:]], indexing="ij")
            coords = torch.stack(grids).unsqueeze(0).expand(shape[0], -1, *shape[2:])
            ref = net.stem(torch.cat([x, coords], 1))
            from trustmap.localizer.model import _conv_with_coords  # same package under test

            assert torch.allclose(_conv_with_coords(net.stem, x), ref, atol=1e-5)
    # the network can tell positions apart: two identical samples shifted in place give different logits
    net = StridedBackbone(1, 1, 1).eval()
    x = torch.zeros(2, 1, 96)
    x[0, 0, 20], x[1, 0, 60] = 1.0, 1.0
    with torch.no_grad():
        z = net(x)
    assert not torch.allclose(z[0, 0, 10:30], z[1, 0, 50:70])


def test_strided_backbone_localizes_the_distractor_task(beats, fitted):
    _, _, te = beats
    assert fitted.backbone_kind_ == "strided"
    ones = te.subset(np.flatnonzero(te.y_clean == 1))
    masks = fitted.locate(ones.X).internal()
    true = window_mass(masks, ones.centers, radius=10)
    dist = window_mass(masks, ones.distractor, radius=10)
    assert true["mass"].mean() >= 0.9, true["mass"].mean()
    assert true["argmax"].mean() >= 0.95, true["argmax"].mean()
    assert dist["mass"].mean() <= 0.08, dist["mass"].mean()


def test_inference_masks_equal_the_eager_formula(beats, fitted, monkeypatch):
    """``masks``/``locate`` (inference mode, chunked, coordinate part broadcast) give δ = tanh(relu(τ ·
    softmax(BN(g(x))))) computed here by hand from the network's layers on the whole batch."""
    _, _, te = beats
    net = fitted.net_
    X = te.X[:137]
    monkeypatch.setattr(E, "_infer_chunks", lambda n, per: [slice(i, min(n, i + 50)) for i in range(0, n, 50)])
    got = fitted.masks(X)
    tau = fitted.tau_
    bb, bn = net.backbone, net.bn
    with torch.no_grad():
        x = torch.from_numpy(X)
        grids = torch.linspace(-1, 1, 187).reshape(1, 1, -1).expand(len(x), 1, 187)
        h = F.conv1d(torch.cat([x, grids], 1), bb.stem.weight, bb.stem.bias, stride=2, padding=2)
        e = bb.enc(h)
        d = F.interpolate(bb.deep(e), size=e.shape[2:], mode="linear", align_corners=False)
        z = F.interpolate(bb.head(torch.cat([d, e], 1)), size=187, mode="linear", align_corners=False)
        z = (z - bn.running_mean.reshape(1, -1, 1)) / torch.sqrt(bn.running_var.reshape(1, -1, 1) + bn.eps)
        z = z * bn.weight.reshape(1, -1, 1) + bn.bias.reshape(1, -1, 1)
        flat = torch.cat([z.reshape(len(x), -1), net.sink.reshape(1, 1).expand(len(x), 1)], 1)
        p = torch.softmax(flat, 1)[:, :-1].reshape(z.shape)
        want = masks_from_probs(p, tau).numpy()
    assert got.shape == X.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # the Attribution of locate carries the same maps, and an explicit tau its own masks
    np.testing.assert_allclose(fitted.locate(X, y=te.y[:137]).internal(), got, atol=0, rtol=0)
    assert np.all(fitted.masks(X, tau=2 * tau) >= got - 1e-7)  # nested path
    assert not net.training


def test_locate_leaves_the_users_model_untouched(beats, fitted):
    net = beats[0]
    net.train()  # a user's model left in training mode, one parameter frozen by the user
    next(net.parameters()).requires_grad_(False)
    before = model_state(net)
    try:
        X = beats[2].X[:64]
        att = fitted.locate(X)
        with torch.no_grad():
            net.eval()
            want = net(torch.from_numpy(X)).argmax(1).numpy()
            net.train()
        assert np.array_equal(att.targets, want)
        assert_same_state(before, model_state(net))
        assert net.training and not next(net.parameters()).requires_grad
    finally:
        next(net.parameters()).requires_grad_(True)
        net.eval()


def test_records_of_older_backbones_still_load(beats, tmp_path):
    """A record fitted with the default (the U-Net, saved with ``backbone=None``) loads as a U-Net."""
    net, fit_data, te = beats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loc = Localizer(backbone="unet", epochs=1, n_boot=100, seed=0).fit(net, fit_data.X[:400], fit_data.y[:400])
    path = loc.save(tmp_path / "old")
    record_path = next(p for p in tmp_path.rglob("*.json"))
    record = json.loads(record_path.read_text())
    record["params"]["backbone"] = None  # as backbone=None writes it
    record_path.write_text(json.dumps(record))
    back = Localizer.load(path, model=net)
    assert back.backbone_kind_ == "unet" and isinstance(back.net_.backbone, UNetBackbone)
    np.testing.assert_allclose(back.masks(te.X[:20]), loc.masks(te.X[:20]), atol=1e-6)
    assert isinstance(back.net_, MaskNet)
