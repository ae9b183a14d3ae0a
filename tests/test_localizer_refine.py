"""Per-sample refinement of the localizer's masks (``Localizer.locate(X, refine=n)``, issue 14): it lowers
the objective it optimizes (checked by hand from the returned masks), keeps the known region on the
distractor task, does not depend on the batch, leaves the user's model, the mask network and the random
streams as they were, and refuses bad values with typed errors."""

import warnings

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from conftest import assert_same_state, model_state
from trustmap import Localizer
from trustmap.errors import InputError
from trustmap.localizer import refine as R
from trustmap.localizer.tasks import distractor_task, window_mass

from test_localizer import tiny_cnn, train

KW = dict(length=96, bump_at=60, distractor_at=20)


@pytest.fixture(scope="module")
def task():
    tr = distractor_task(1200, seed=31, **KW)
    torch.manual_seed(31)
    net = train(tiny_cnn(1, 96, 2), tr.X, tr.y, epochs=6, seed=31)
    return net, distractor_task(1000, seed=32, **KW), distractor_task(300, seed=33, **KW)


@pytest.fixture(scope="module")
def fitted(task):
    net, d, _ = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Localizer(epochs=10, batch_size=64, n_boot=200, seed=0).fit(net, d.X, d.y)


def by_hand(net, X, y, maps, fractions, preserve, base):
    """The refinement's objective from the returned masks: the top-k entries by mask value (k = round(f L)),
    the rest / that region replaced by the baseline, -log p_y or -log(1 - p_y), averaged over the budgets."""
    x = torch.from_numpy(X).double()
    b = torch.as_tensor(base, dtype=torch.float64).expand_as(x)
    out = np.zeros(len(X))
    order = np.argsort(-maps.reshape(len(X), -1), axis=1, kind="stable")
    L = maps.shape[-1]
    for f in fractions:
        k = max(1, min(L - 1, round(f * L)))
        m = np.zeros((len(X), L))
        np.put_along_axis(m, order[:, :k], 1.0, axis=1)
        m = torch.from_numpy(m).reshape(x.shape)
        xm = b + m * (x - b) if preserve else x + m * (b - x)
        with torch.no_grad():
            z = net.double()(xm)
        net.float()
        yy = torch.from_numpy(y)
        others = z.masked_fill(F.one_hot(yy, z.shape[1]).bool(), float("-inf"))
        lo = z[torch.arange(len(X)), yy] - torch.logsumexp(others, 1)  # log p_y - log(1 - p_y)
        out += (F.softplus(-lo) if preserve else F.softplus(lo)).numpy()
    return out / len(fractions)


def test_refinement_lowers_its_objective_checked_by_hand(task, fitted):
    net, _, te = task
    X = te.X[:120]
    plain = fitted.locate(X)
    att = fitted.locate(X, refine=20)
    e = att.extras
    assert e["refine"] == 20 and e["refine_budget"] == list(R.DEFAULT_REMOVAL_BUDGETS)
    assert e["refine_forward_passes"] == 20 + 2 * len(R.DEFAULT_REMOVAL_BUDGETS) and e["refine_backward_passes"] == 20
    before, after = e["refine_objective_before"], e["refine_objective_after"]
    # (class-0 samples, no bump, stay class 0 whatever is removed: their objective cannot fall far)
    assert np.all(after <= before) and after.mean() <= before.mean() - 0.05, (before.mean(), after.mean())
    assert e["refine_improved"].any()
    # the reported objectives are those of the returned masks, recomputed here from their ranking
    y = att.targets
    base = fitted.base_stats_.train_mean.numpy()
    np.testing.assert_allclose(by_hand(net, X, y, att.internal(), R.DEFAULT_REMOVAL_BUDGETS, False, base), after,
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(by_hand(net, X, y, plain.internal(), R.DEFAULT_REMOVAL_BUDGETS, False, base), before,
                               rtol=1e-3, atol=1e-4)
    # samples that did not improve keep their amortized masks exactly
    same = ~e["refine_improved"]
    np.testing.assert_allclose(att.internal()[same], plain.internal()[same], atol=1e-6)
    assert 0 <= att.internal().min() and att.internal().max() <= 1


def test_refined_masks_keep_the_known_region(task, fitted):
    net, _, te = task
    ones = te.subset(np.flatnonzero(te.y_clean == 1))
    masks = fitted.locate(ones.X, refine=20).internal()
    mass = window_mass(masks, ones.centers, radius=10)["mass"].mean()
    dist = window_mass(masks, ones.distractor, radius=10)["mass"].mean()
    assert mass >= 0.9 and dist <= 0.05, (mass, dist)


def test_preserve_refinement_at_one_budget(task):
    net, d, te = task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = Localizer(objective="preserve", baseline="zero", tau=[2.0, 8.0, 24.0], epochs=3, n_boot=100,
                         seed=0).fit(net, d.X[:600], d.y[:600])
    X = te.X[:100]
    att = keep.locate(X, refine=15, refine_budget=0.3)
    e = att.extras
    assert e["refine_budget"] == [0.3] and e["refine_forward_passes"] == 17
    assert np.all(e["refine_objective_after"] <= e["refine_objective_before"])
    np.testing.assert_allclose(by_hand(net, X, att.targets, att.internal(), [0.3], True, 0.0),
                               e["refine_objective_after"], rtol=1e-3, atol=1e-4)


def test_refinement_does_not_depend_on_the_batch(task, fitted):
    _, _, te = task
    X = te.X[:24]
    whole = fitted.locate(X, refine=8).internal()
    parts = np.concatenate([fitted.locate(X[:7], refine=8).internal(), fitted.locate(X[7:], refine=8).internal()])
    np.testing.assert_allclose(whole, parts, atol=1e-5)
    with torch.inference_mode():  # a caller under inference mode gets the same refinement
        np.testing.assert_allclose(fitted.locate(X, refine=8).internal(), whole, atol=1e-6)


def test_refinement_leaves_model_network_and_random_streams_alone(task, fitted):
    net, _, te = task
    before = model_state(net)
    def grads(module):  # what the last training step left
        return [None if p.grad is None else p.grad.clone() for p in module.parameters()]

    g_net, g_mask = grads(net), grads(fitted.net_)
    mask_net = {k: v.clone() for k, v in fitted.net_.state_dict().items()}
    torch.manual_seed(5)
    np.random.seed(5)
    t_state, n_state = torch.random.get_rng_state(), np.random.get_state()
    fitted.locate(te.X[:16], refine=3)
    assert torch.equal(torch.random.get_rng_state(), t_state)
    assert np.array_equal(np.random.get_state()[1], n_state[1])
    assert_same_state(before, model_state(net))
    for module, before_g in ((net, g_net), (fitted.net_, g_mask)):
        for a, b in zip(grads(module), before_g):
            assert (a is None and b is None) or torch.equal(a, b)
    for k, v in fitted.net_.state_dict().items():
        assert torch.equal(v, mask_net[k]), k
    assert not fitted.net_.training


@pytest.mark.parametrize("kw", [dict(refine=-1), dict(refine=True), dict(refine=2.5), dict(refine="3"),
                                dict(refine=3, refine_budget=0.0), dict(refine=3, refine_budget=1.0),
                                dict(refine=3, refine_budget=[]), dict(refine=3, refine_budget="0.3"),
                                dict(refine=3, refine_budget=[0.2, float("nan")]), dict(refine_budget=0.3)])
def test_bad_refine_values_are_typed_errors(task, fitted, kw):
    _, _, te = task
    with pytest.raises(InputError) as err:
        fitted.locate(te.X[:4], **kw)
    assert err.value.parameter in ("refine", "refine_budget")
    assert isinstance(err.value, ValueError)


def test_refinement_needs_the_classifier(task, fitted, tmp_path):
    _, _, te = task
    fitted.save(tmp_path / "loc")
    alone = Localizer.load(tmp_path / "loc")
    assert alone.locate(te.X[:4]).maps.shape == te.X[:4].shape  # the amortized masks need no classifier
    with pytest.raises(InputError) as err:
        alone.locate(te.X[:4], refine=2)
    assert err.value.parameter == "refine"


def test_mask_entries_stay_below_one_where_tanh_rounds_to_one(task, fitted):
    from trustmap.localizer.model import masks_from_probs

    p = torch.tensor([[[0.9, 0.05, 0.05]]])
    for dtype in (torch.float32, torch.float64):
        d = masks_from_probs(p.to(dtype), 100.0)
        assert torch.tanh(torch.tensor(90.0, dtype=dtype)) == 1  # what the cap is for
        assert d.max() < 1 and d[0, 0, 0] == 1 - torch.finfo(dtype).eps / 2
        assert torch.allclose(d[0, 0, 1:], torch.tanh(torch.tensor(5.0, dtype=dtype)))
    _, _, te = task
    m = fitted.locate(te.X[:20], tau=1000.0).maps  # far beyond the path: many entries saturate
    assert m.max() < 1 and (m == np.float32(1 - 2 ** -24)).any()


def test_target_reached_at_the_first_tau_warns():
    """A path whose first τ already reaches the target (e.g. ~50 calibration samples whose wide intervals the
    monotone path pools into one) says so instead of choosing the smallest τ silently."""
    from types import SimpleNamespace

    from trustmap.localizer import selection as S
    from trustmap.localizer.r2 import R2Path

    grid = np.array([1.0, 2.0, 4.0, 8.0])
    loc = SimpleNamespace(settings_={"objective": "remove"}, target_r2=0.5, target_r2_=0.5, confidence=0.95,
                          n_boot=100, seed=0)

    def path(low):
        low = np.asarray(low, dtype=float)
        return R2Path(grid, low + 0.1, low, low + 0.2, low + 0.1, low, low + 0.2, "calibration", 50, 0.95, "prob", 0.5)

    with pytest.warns(S.FirstTauWarning, match="smallest tau on the path .* n = 50"):
        assert S._choose(loc, grid, None, None, None, path([0.55, 0.55, 0.55, 0.55]), None, None) == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert S._choose(loc, grid, None, None, None, path([0.2, 0.4, 0.6, 0.7]), None, None) == 2
    assert not [w for w in caught if issubclass(w.category, S.FirstTauWarning)]


def test_cli_locate_refine_on_a_keras_h5_and_unlabeled_npy(tmp_path, capsys):
    """`trustmap locate --refine N` on files that are not ours: the refined masks are written with their
    record; a bad N is exit 2 with one line."""
    import json

    import trustmap
    from trustmap import Attribution
    from trustmap.cli import main
    from trustmap.data import make_synthetic

    keras = trustmap.models.import_keras()
    keras.utils.set_random_seed(0)
    kw = dict(rank=1, size=32, channels=1, n_classes=2, distractor=True)
    tr, te = make_synthetic(200, seed=1, **kw), make_synthetic(240, seed=2, **kw)
    km = keras.Sequential([keras.Input((32, 1)), keras.layers.Conv1D(4, 5, activation="relu", padding="same"),
                           keras.layers.Flatten(), keras.layers.Dense(2)])
    km.compile(optimizer=keras.optimizers.Adam(3e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    km.fit(np.moveaxis(tr.internal(), 1, -1), tr.y, epochs=3, batch_size=32, verbose=0)
    km.save(tmp_path / "model.h5")
    np.save(tmp_path / "x.npy", np.moveaxis(te.internal(), 1, -1).astype("float32"))  # no labels
    out = tmp_path / "loc"
    capsys.readouterr()
    assert main(["locate", "--model", str(tmp_path / "model.h5"), "--data", str(tmp_path / "x.npy"), "--epochs", "1",
                 "--tau", "2,4", "--refine", "3", "--out", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["refine"] == 3
    masks = Attribution.load(out / "masks.npz")
    assert masks.extras["refine"] == 3 and masks.extras["refine_forward_passes"] == 3 + 2 * 6
    assert np.all(masks.extras["refine_objective_after"] <= masks.extras["refine_objective_before"])
    assert masks.maps.shape == (240, 32, 1) and np.all((masks.maps >= 0) & (masks.maps < 1))
    assert json.loads((out / "run.json").read_text())["settings"]["refine"] == 3
    assert main(["report", str(out), "--quiet"]) == 0  # the report says the masks are refined, and whose R² it is
    page = (out / "report.html").read_text()
    assert "refined, 3 steps" in page and "the R² is the mask network" in page
    capsys.readouterr()
    assert main(["locate", "--model", str(tmp_path / "model.h5"), "--data", str(tmp_path / "x.npy"),
                 "--refine", "-2", "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "refine" in err and len(err.strip().splitlines()) == 1


def test_smallest_tau_for_want_of_evidence_says_so():
    """The ecg208 case of a small calibration split: no τ reaches the target and the masked risks are too
    noisy to tell the τ apart, so the fallback takes the smallest τ: the warning says why."""
    from types import SimpleNamespace

    from trustmap.localizer import selection as S
    from trustmap.localizer.r2 import R2Path

    grid = np.array([1.0, 4.0, 16.0])
    rng = np.random.default_rng(0)
    e = rng.normal(0, 0.3, (3, 30))
    masked = 0.4 + 0.03 * np.arange(3)[:, None] + e - e.mean(1, keepdims=True)  # n = 30: means 0.40 < 0.43 < 0.46
    loc = SimpleNamespace(settings_={"objective": "remove"}, target_r2=0.99, target_r2_=0.99, confidence=0.95,
                          n_boot=300, seed=0)
    low = np.array([-0.5, -0.5, -0.5])
    cal = R2Path(grid, low + 0.2, low, low + 0.6, low + 0.2, low, low + 0.6, "calibration", 30, 0.95, "prob", 0.99)
    with pytest.warns(UserWarning, match=r"cannot tell tau = 1 from the path's best tau = 16"):
        assert S._choose(loc, grid, masked, None, None, cal, None, None) == 0
    assert not loc.target_reached_


def test_run_locate_writes_refined_masks_and_checks_refine_before_fitting(task, tmp_path):
    from trustmap import Attribution
    from trustmap.localizer import run_locate

    net, d, _ = task
    with pytest.raises(InputError) as err:
        run_locate(net, (d.X[:300], d.y[:300]), tmp_path / "bad", epochs=1, refine=-2, plots=False)
    assert err.value.parameter == "refine" and not (tmp_path / "bad").exists()  # refused before any fit
    X, y = d.X[:400], d.y[:400]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = run_locate(net, (X, y), tmp_path / "run", epochs=2, n_boot=200, plots=False, refine=4,
                         refine_budget=0.3)
    assert out["refine"] == 4
    written = Attribution.load(out["masks"]).maps
    loc = Localizer.load(tmp_path / "run" / "localizer.safetensors", model=net)
    np.testing.assert_array_equal(written, loc.locate(X, y=y, refine=4, refine_budget=0.3).maps)
    assert not np.array_equal(written, loc.locate(X, y=y).maps)  # the refinement changed the masks
