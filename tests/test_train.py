"""trustmap.zoo.Trainer: accuracy on MNIST-1D, early stopping, determinism, losses, input checks."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import trustmap
import trustmap.datasets
from trustmap import zoo
from trustmap.errors import DataError, InputError, ShapeError, TargetError


def _fresh(builder, seed=0, **kw):
    torch.manual_seed(seed)
    return builder(**kw)


def _bump_task(n=160, channels=2, length=32, seed=0):
    """Binary task: class 1 carries a +2 bump on channel 0 at positions 10..15. Layout (N, L, C)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 0.5, size=(n, length, channels)).astype(np.float32)
    y = rng.integers(0, 2, n)
    X[y == 1, 10:16, 0] += 2.0
    return X, y


def _noise_task(n=96, length=12, k=3, seed=0):
    """Random labels: a model can only memorize, so the validation loss rises once it does."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, length)).astype(np.float32), rng.integers(0, k, n),
            rng.normal(size=(n, length)).astype(np.float32), rng.integers(0, k, n))


@pytest.mark.slow
def test_mnist1d_cnn_reaches_the_seed_accuracy():
    """The seed report's CNN reaches >= 0.88 test accuracy (report: 0.919) with the recipe, for two inits
    (seed 6 is the worst of 12 measured)."""
    X, y = trustmap.datasets.load("mnist1d", split="train")
    Xt, yt = trustmap.datasets.load("mnist1d", split="test")
    for seed in (0, 6):
        model = _fresh(zoo.mnist1d_cnn, seed)
        hist = zoo.Trainer(**zoo.RECIPES["mnist1d_cnn"], seed=seed, progress=False).fit(model, X, y)
        acc = float((trustmap.load_model(model).predict(Xt) == yt).mean())
        assert acc >= 0.88, (seed, acc, hist.epochs)
        assert not model.training
        assert hist.best_epoch == int(np.argmin(hist.val_loss)) and hist.epochs <= 20


def test_early_stopping_stops_and_restores_the_best_epoch():
    X, y, Xv, yv = _noise_task()
    model = _fresh(zoo.mnist1d_cnn, 0, n_classes=3, length=12, channels=8)
    trainer = zoo.Trainer(epochs=60, batch_size=16, lr=1e-2, patience=3, schedule=None, progress=False)
    hist = trainer.fit(model, X, y, Xv, yv)
    assert hist.stopped_early and hist.epochs < 60
    assert hist.epochs == hist.best_epoch + 1 + 3  # stopped after `patience` epochs without improvement
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert hist.val_loss[-1] > hist.val_loss[hist.best_epoch]  # the validation loss did rise
    assert len(hist.train_loss) == len(hist.val_acc) == len(hist.lr) == hist.epochs
    # the model holds the best epoch's weights: its validation loss is the recorded best, computed independently
    assert not model.training
    with torch.no_grad():
        val_loss = F.cross_entropy(model(torch.from_numpy(Xv)[:, None]), torch.from_numpy(yv)).item()
        val_acc = (model(torch.from_numpy(Xv)[:, None]).argmax(1).numpy() == yv).mean()
    assert val_loss == pytest.approx(hist.val_loss[hist.best_epoch], rel=1e-5)
    assert val_acc == pytest.approx(hist.val_acc[hist.best_epoch])
    # without patience all epochs run, and the best weights are still restored
    model = _fresh(zoo.mnist1d_cnn, 0, n_classes=3, length=12, channels=8)
    hist = zoo.Trainer(epochs=12, batch_size=16, lr=1e-2, patience=None, schedule=None,
                       progress=False).fit(model, X, y, Xv, yv)
    assert hist.epochs == 12 and not hist.stopped_early
    with torch.no_grad():
        val_loss = F.cross_entropy(model(torch.from_numpy(Xv)[:, None]), torch.from_numpy(yv)).item()
    assert val_loss == pytest.approx(min(hist.val_loss), rel=1e-5)


def test_fit_is_deterministic_and_leaves_the_global_rng_alone():
    rng = np.random.default_rng(0)
    X = rng.random((60, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 60)
    init = _fresh(zoo.mnist2d_cnn, 0, size=(8, 8)).state_dict()  # has dropout: its masks must be seeded too
    results = []
    for global_seed, fit_seed in ((1, 5), (2, 5), (3, 6)):
        model = zoo.mnist2d_cnn(size=(8, 8))
        model.load_state_dict(init)
        torch.manual_seed(global_seed)
        state = torch.get_rng_state()
        hist = zoo.Trainer(epochs=3, batch_size=16, seed=fit_seed, progress=False).fit(model, X, y)
        assert torch.equal(torch.get_rng_state(), state)  # global stream neither used nor advanced
        results.append((hist, model.state_dict()))
    (h1, s1), (h2, s2), (h3, s3) = results
    assert h1.train_loss == h2.train_loss and h1.val_loss == h2.val_loss
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert h1.train_loss != h3.train_loss  # another seed: another split/shuffle/dropout


def test_layouts_give_the_same_training():
    """(N, L, C) and (N, C, L) arrays of the same data train to the same weights."""
    X, y = _bump_task(n=48, channels=3, length=16)
    out = []
    for data, layout in ((X, None), (np.ascontiguousarray(X.transpose(0, 2, 1)), None), (X, "NLC")):
        model = _fresh(zoo.ecg_fcn, 0, in_channels=3, length=16)
        zoo.Trainer(epochs=2, batch_size=16, progress=False).fit(model, data, y, layout=layout)
        out.append(model.state_dict())
    for other in out[1:]:
        assert all(torch.equal(out[0][k], other[k]) for k in out[0])


def test_bce_path_learns_a_separable_task():
    X, y = _bump_task(n=96, channels=2, length=24)
    Xv, yv = _bump_task(n=80, channels=2, length=24, seed=1)
    model = _fresh(zoo.ecg_fcn, 0, in_channels=2, length=24)  # one logit unit
    trainer = zoo.Trainer(epochs=6, batch_size=32, lr=3e-3, patience=5, progress=False)
    hist = trainer.fit(model, X, y, Xv, yv)
    wrapped = trustmap.load_model(model)
    assert (wrapped.predict(Xv) == yv).mean() >= 0.95
    assert hist.val_acc[hist.best_epoch] >= 0.95 and hist.train_loss[-1] < hist.train_loss[0]
    # the recorded validation loss is binary cross-entropy on the single logit
    with torch.no_grad():
        z = model(torch.from_numpy(Xv).permute(0, 2, 1))[:, 0]
    bce = F.binary_cross_entropy_with_logits(z, torch.from_numpy(yv).float()).item()
    assert bce == pytest.approx(hist.val_loss[hist.best_epoch], rel=1e-5)
    # a final Sigmoid is not trained through: the pre-activation logit is
    model = _fresh(zoo.ecg_fcn, 0, in_channels=2, length=24, final_activation="sigmoid")
    trainer.fit(model, X, y, Xv, yv)
    with torch.no_grad():
        p = model(torch.from_numpy(Xv).permute(0, 2, 1))[:, 0].numpy()
    assert ((p > 0.5) == yv).mean() >= 0.95


def test_schedules():
    X, y, Xv, yv = _noise_task(n=64)
    model = _fresh(zoo.mnist1d_cnn, 0, n_classes=3, length=12, channels=4)
    h = zoo.Trainer(epochs=6, lr=1e-2, schedule="cosine", patience=None, progress=False).fit(model, X, y, Xv, yv)
    np.testing.assert_allclose(h.lr, [1e-2 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)], rtol=1e-9)
    model = _fresh(zoo.mnist1d_cnn, 0, n_classes=3, length=12, channels=8)
    h = zoo.Trainer(epochs=12, batch_size=8, lr=1e-2, schedule="plateau", patience=None,
                    progress=False).fit(model, X, y, Xv, yv)
    # plateau: the LR halves once the validation loss has not hit a new low for more than 2 epochs
    # (patience None -> 4 // 2); replay that rule on the recorded losses
    want, lr, best, bad = [], 1e-2, math.inf, 0
    for v in h.val_loss:
        want.append(lr)
        best, bad = (v, 0) if v < best else (best, bad + 1)
        if bad > 2:
            lr, bad = lr / 2, 0
    assert h.lr == pytest.approx(want, rel=1e-12)
    assert h.lr[-1] < h.lr[0]  # random labels: validation never improves for long
    model = _fresh(zoo.mnist1d_cnn, 0, n_classes=3, length=12, channels=4)
    h = zoo.Trainer(epochs=3, schedule=None, val_fraction=0, progress=False).fit(model, X, y)
    assert h.lr == [1e-3] * 3 and all(math.isnan(v) for v in h.val_loss) and h.best_epoch == 2


def test_one_hot_labels_equal_indices_and_progress_goes_to_stderr(capsys):
    X, y, _, _ = _noise_task(n=40)
    states = []
    for labels, progress in ((y, True), (np.eye(3)[y], False)):
        model = _fresh(zoo.mnist1d_cnn, 0, n_classes=3, length=12, channels=4)
        zoo.Trainer(epochs=2, progress=progress).fit(model, X, labels)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    captured = capsys.readouterr()
    assert captured.out == "" and "loss=" in captured.err and "acc=" in captured.err and "2/2" in captured.err


def test_invalid_inputs_raise_typed_errors():
    X, y, _, _ = _noise_task(n=20)
    m = zoo.mnist1d_cnn(n_classes=3, length=12, channels=4)
    t = zoo.Trainer(epochs=1, progress=False)
    with pytest.raises(TargetError, match="out of range"):
        t.fit(m, X, np.where(y == 0, 3, y))
    with pytest.raises(TargetError, match="binary"):
        t.fit(zoo.ecg_fcn(in_channels=1, length=12), X, y + 1)  # labels 1..3 for one logit unit
    with pytest.raises(ShapeError, match="different lengths"):
        t.fit(m, X, y[:-1])
    Xn = X.copy()
    Xn[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        t.fit(m, Xn, y)
    with pytest.raises(DataError, match="NaN"):
        t.fit(m, X, np.where(y == 0, np.nan, y))
    with pytest.raises(DataError, match="whole numbers"):
        t.fit(m, X, y + 0.5)
    with pytest.raises(ShapeError):
        t.fit(m, X[:, :10], y)  # wrong length for the model
    with pytest.raises(ShapeError):
        t.fit(m, np.stack([X, X], -1), y)  # two channels for a one-channel model
    with pytest.raises(InputError, match="X_val"):
        t.fit(m, X, y, X_val=X)
    with pytest.raises(InputError, match="schedule"):
        zoo.Trainer(schedule="step").fit(m, X, y)
    with pytest.raises(InputError, match="lr"):
        zoo.Trainer(lr=0).fit(m, X, y)
    with pytest.raises(InputError, match="val_fraction"):
        zoo.Trainer(val_fraction=1.0).fit(m, X, y)
