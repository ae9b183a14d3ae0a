"""Hostile inputs for the localizer (issue 12): typed errors, atomic checkpoints, no RNG leaks."""

import contextlib
import json
import warnings

import numpy as np
import pytest
import torch

import trustmap
from trustmap import Localizer, zoo
from trustmap.errors import DataError, InputError, RunDirError
from trustmap.localizer.tasks import distractor_task

from test_localizer import tiny_cnn, train

@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# an explicit path: these tests are about files and checkpoints (an 'auto' path that misses its target
# would be extended by further fits)
KW = dict(epochs=4, n_boot=200, batch_size=64, seed=5, tau=[1.0, 2.0, 4.0, 8.0])


@pytest.fixture(scope="module")
def task_net():
    task = distractor_task(700, seed=21, length=64, bump_at=40, distractor_at=14)
    net = train(tiny_cnn(1, 64, 2), task.X, task.y, epochs=5, seed=21)
    return task, net


@pytest.fixture(scope="module")
def fitted(task_net):
    task, net = task_net
    with quiet():
        return Localizer(**KW).fit(net, task.X, task.y)


def test_save_under_a_file_is_a_typed_error(fitted, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(InputError, match="under a file") as e:
        fitted.save(f)
    assert str(f) in str(e.value)
    with pytest.raises(InputError, match="under a file"):
        fitted.save(f / "loc.safetensors")
    assert f.read_text() == "x"


@pytest.mark.parametrize("key", ["tau", "settings", "r2_path", "spatial"])
def test_load_of_a_record_with_a_missing_key_names_it(fitted, tmp_path, key):
    p = fitted.save(tmp_path / "loc")
    js = p.with_suffix(".json")
    rec = json.loads(js.read_text())
    del rec[key]
    js.write_text(json.dumps(rec))
    with pytest.raises(RunDirError, match=repr(key)) as e:
        Localizer.load(tmp_path / "loc")
    assert str(js) in str(e.value)


def test_load_refuses_changed_weights_and_foreign_records(fitted, tmp_path):
    p = fitted.save(tmp_path / "loc.safetensors")
    data = bytearray(p.read_bytes())
    data[-3] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="sha256"):
        Localizer.load(p)
    p.with_suffix(".json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(RunDirError, match="not a trustmap localizer"):
        Localizer.load(p)
    p.with_suffix(".json").write_text("{oops")
    with pytest.raises(RunDirError, match="corrupt"):
        Localizer.load(p)


class Kill(BaseException):
    """Stands for the process being killed (not an Exception: nothing may catch it)."""


def test_checkpoint_killed_between_weights_and_record_resumes_exactly(task_net, tmp_path, monkeypatch):
    task, net = task_net
    with quiet():
        straight = Localizer(**KW).fit(net, task.X, task.y)
    from trustmap import records

    real = records._io.write_json

    def killed_at_epoch_2(path, obj):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            raise Kill  # the weights of epoch 2 are on disk, its record is not
        return real(path, obj)

    ck = tmp_path / "ck"
    monkeypatch.setattr(records._io, "write_json", killed_at_epoch_2)
    with pytest.raises(Kill):
        with quiet():
            Localizer(checkpoint=ck, **KW).fit(net, task.X, task.y)
    monkeypatch.setattr(records._io, "write_json", real)
    rec = json.loads((ck / "checkpoint.json").read_text())
    assert rec["epoch"] == 1 and (ck / rec["weights_file"]).exists()  # the previous pair is whole
    seen = []
    with quiet():
        resumed = Localizer(checkpoint=ck, **KW).fit(net, task.X, task.y, callback=lambda e, logs: seen.append(e))
    assert seen == [2, 3]  # epoch 2 is trained again, from epoch 1's weights
    for (k1, v1), (k2, v2) in zip(straight.net_.state_dict().items(), resumed.net_.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert resumed.tau_ == straight.tau_ and resumed.r2_ == straight.r2_
    # one weights file is left: the one the record names
    assert [p.name for p in ck.glob("*.safetensors")] == [json.loads((ck / "checkpoint.json").read_text())
                                                            ["weights_file"]]


def test_checkpoint_whose_weights_were_replaced_is_refused(task_net, tmp_path):
    task, net = task_net

    class Stop(Exception):
        pass

    def stop(epoch, logs):
        if epoch == 1:
            raise Stop

    ck = tmp_path / "ck"
    with pytest.raises(Stop), quiet():
        Localizer(checkpoint=ck, **KW).fit(net, task.X, task.y, callback=stop)
    w = next(ck.glob("*.safetensors"))
    data = bytearray(w.read_bytes())
    data[-2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(RunDirError, match="sha256"):
        Localizer(checkpoint=ck, **KW).fit(net, task.X, task.y)


def test_non_finite_logits_are_a_typed_error(task_net):
    task, net = task_net
    bad = tiny_cnn(1, 64, 2)
    bad.load_state_dict(net.state_dict())
    with torch.no_grad():
        bad[0].weight[0, 0, 0] = float("nan")
    before = {k: v.clone() for k, v in bad.state_dict().items()}
    with pytest.raises(DataError, match="not finite"):
        Localizer(**KW).fit(bad, task.X, task.y)
    for k, v in bad.state_dict().items():  # the model is left as it was (NaN included)
        assert torch.equal(v.isnan(), before[k].isnan()) and torch.equal(v.nan_to_num(), before[k].nan_to_num())
    with pytest.raises(DataError, match="not finite|NaN or Inf"):  # the model-level check may see it first
        Localizer(**KW).fit(net, task.X * 1e37, task.y)
    X = task.X.copy()
    X[3, 0, 5] = np.inf
    with pytest.raises(DataError, match="NaN or Inf"):
        Localizer(**KW).fit(net, X, task.y)


def test_loading_a_safetensors_model_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(0)
    m = zoo.mnist1d_cnn(length=40)
    path = zoo.save(m, tmp_path / "cnn.safetensors")
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    trustmap.load_model(path)
    assert torch.equal(torch.random.get_rng_state(), state)
    zoo.load(path)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_early_stopping_keeps_the_best_weights_and_resumes(task_net, tmp_path):
    """Early stopping and the plateau schedule (dnn-locate's EarlyStopping(restore_best_weights) and
    ReduceLROnPlateau): the validation loss is recorded, training stops after `patience` bad epochs,
    the best epoch's weights are the fitted ones, and a checkpointed fit resumes to the same result."""
    from trustmap.localizer.training import validation_loss

    task, net = task_net
    kw = {**KW, "epochs": 12, "lr": 0.05, "early_stopping": 1, "lr_schedule": "plateau"}
    with quiet():
        loc = Localizer(**kw).fit(net, task.X, task.y)
    h = loc.history_
    vals = [e["val_loss"] for e in h]
    # reference loop: the rule of the docstring, replayed on the recorded validation losses
    best, bad, scale, stop, lrs = np.inf, 0, 1.0, None, []
    for i, v in enumerate(vals):
        lrs.append(0.05 * scale)  # the rate the epoch trained with
        if not np.isfinite(best) or v < best - 1e-4 * abs(best):
            best, bad, best_i = v, 0, i
        else:
            bad += 1
            if bad % 2 == 0:
                scale = max(scale / 2, 1 / 64)
        if bad >= 1:
            stop = i
            break
    assert len(h) == (12 if stop is None else stop + 1)  # stopped at the first bad epoch, if any
    assert loc.best_epoch_ == best_i  # the last epoch that improved by more than 1e-4 (relative)
    np.testing.assert_allclose([e["lr"] for e in h], lrs, rtol=1e-12)
    # the fitted weights are the best epoch's: on the calibration split their validation loss is the best one
    import trustmap
    from trustmap.localizer.common import stratified_split
    from trustmap.localizer.training import reference

    m = trustmap.load_model(net)
    cal = stratified_split(task.y, [0.6, 0.2, 0.2], np.random.default_rng(KW["seed"]))[1]
    xc, yc = torch.from_numpy(task.X[cal]), torch.from_numpy(task.y[cal])
    v = validation_loss(loc, m, loc.net_, xc, yc, reference(loc, m, xc, yc), loc.tau_grid_.min(), loc.tau_grid_.max())
    assert v == pytest.approx(vals[best_i], rel=1e-5)
    with quiet():
        again = Localizer(**{**kw, "checkpoint": tmp_path / "ck"}).fit(net, task.X, task.y)
    assert [e["val_loss"] for e in again.history_] == vals
    with quiet():
        resumed = Localizer(**{**kw, "checkpoint": tmp_path / "ck"}).fit(net, task.X, task.y)
    for (k1, v1), (k2, v2) in zip(loc.net_.state_dict().items(), resumed.net_.state_dict().items()):
        assert torch.equal(v1, v2), k1
    with pytest.raises(InputError):
        Localizer(early_stopping=0)
    with pytest.raises(InputError):
        Localizer(lr_schedule="step")
