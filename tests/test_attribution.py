import json

import numpy as np
import pytest

from trustmap import Attribution
from trustmap.errors import DataError, RunDirError


def make(n=3, layout="NLC"):
    rng = np.random.default_rng(0)
    return Attribution(rng.normal(size=(n, 20, 4)).astype("float32"), np.arange(n) % 2, "saliency",
                       {"abs": True}, layout, {"delta": rng.normal(size=n), "r2": 0.81},
                       {"model": "abc123", "seed": 7})


def test_save_load_round_trip(tmp_path):
    a = make()
    path = a.save(tmp_path / "sal")
    assert path.suffix == ".npz" and path.with_suffix(".json").exists()
    b = Attribution.load(path)
    np.testing.assert_array_equal(a.maps, b.maps)
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.extras["delta"], b.extras["delta"])
    assert b.extras["r2"] == 0.81 and b.method == "saliency" and b.params == {"abs": True}
    assert b.layout == "NLC" and b.provenance["model"] == "abc123" and "torch" in b.provenance["versions"]
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["shape"] == [3, 20, 4]


def test_internal_view_and_subset():
    a = make()
    assert a.internal().shape == (3, 4, 20)
    s = a[[0, 2]]
    assert len(s) == 2 and s.extras["delta"].shape == (2,) and s.extras["r2"] == 0.81
    np.testing.assert_array_equal(s.targets, [0, 0])


def test_corrupt_or_missing_files_are_named(tmp_path):
    a = make()
    path = a.save(tmp_path / "x.npz")
    path.with_suffix(".json").unlink()
    with pytest.raises(RunDirError, match="x.json"):
        Attribution.load(path)
    path = a.save(tmp_path / "y.npz")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(RunDirError, match="corrupt"):
        Attribution.load(path)
    path = a.save(tmp_path / "z.npz")
    other = make(n=3)
    other.maps[0, 0, 0] += 1
    with open(path, "wb") as fh:
        np.savez_compressed(fh, maps=other.maps, targets=other.targets)
    with pytest.raises(RunDirError, match="do not match"):
        Attribution.load(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    a = make()
    path = a.save(tmp_path / "keep.npz")
    original = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", fail)
    with pytest.raises(OSError):
        make(n=5).save(path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_targets_must_match_maps():
    with pytest.raises(DataError, match="targets"):
        Attribution(np.zeros((3, 5)), [0, 1], "x", layout="NL")
