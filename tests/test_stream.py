"""Streaming: readers for every format, incremental resumable outputs, constant memory, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import trustmap
from trustmap.errors import DataError, InputError, MissingFileError, ShapeError
from trustmap.stream import (StreamConflictError, open_source, read_maps, stream_evaluate, stream_explain,
                             stream_locate)
from trustmap.zoo import mnist1d_cnn

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return mnist1d_cnn()


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2500, 40)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    return X, y


@pytest.fixture
def npy(tmp_path, arrays):
    X, y = arrays
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "X.npy", tmp_path / "y.npy"


# ---- readers ------------------------------------------------------------------------------------

RANGES = [(0, 1), (0, 700), (699, 1025), (1023, 2049), (1500, 2500), (2499, 2500), (5, 5)]


def _check_ranges(src, X, y=None):
    for a, b in RANGES:
        xa, ya = src.read(a, b)
        assert xa.dtype == np.float32 and xa.shape == (b - a, *X.shape[1:])
        np.testing.assert_array_equal(xa, X[a:b].astype(np.float32))
        if y is not None:
            np.testing.assert_array_equal(ya, y[a:b])


def test_npy_source_reads_any_range_with_labels_and_layout(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2500, 30, 3)).astype(np.float64)  # float64, channels last
    y = rng.integers(0, 4, len(X))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    with open_source(tmp_path / "X.npy", labels=tmp_path / "y.npy", layout="NLC") as src:
        assert (src.n, src.sample_shape, src.layout, src.format) == (2500, (30, 3), "NLC", "npy")
        assert src.classes == ["0", "1", "2", "3"]
        _check_ranges(src, X, y)
    np.savetxt(tmp_path / "names.txt", np.array(["b", "a", "c", "a"] * 625), fmt="%s")
    with open_source(tmp_path / "X.npy", labels=tmp_path / "names.txt", layout="NLC") as src:
        assert src.classes == ["a", "b", "c"]
        assert src.read(0, 4)[1].tolist() == [1, 0, 2, 0]


def test_parquet_source_list_column_and_numeric_columns_across_row_groups(tmp_path, arrays):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y = arrays
    flat = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
    pq.write_table(pa.table({"signal": flat, "label": pa.array(y)}), tmp_path / "a.parquet", row_group_size=300)
    with open_source(tmp_path / "a.parquet") as src:
        assert (src.n, src.sample_shape, src.meta["row_groups"]) == (2500, (40,), 9)
        _check_ranges(src, X, y)
    cols = {f"t{i}": pa.array(X[:, i]) for i in range(X.shape[1])}
    names = np.array(["N", "V", "S"])[y % 3]
    pq.write_table(pa.table({**cols, "class": pa.array(names)}), tmp_path / "b.parquet", row_group_size=512)
    with open_source(tmp_path / "b.parquet") as src:
        assert src.classes == ["N", "S", "V"]
        _check_ranges(src, X, np.searchsorted(["N", "S", "V"], names))


def test_h5_source(tmp_path, arrays):
    import h5py

    X, y = arrays
    X3 = np.repeat(X[:, None, :], 2, axis=1)  # (N, 2, 40) channels first
    with h5py.File(tmp_path / "d.h5", "w") as fh:
        d = fh.create_dataset("X", data=X3, chunks=(128, 2, 40))
        d.attrs["layout"] = "NCL"
        fh.create_dataset("y", data=y)
    with open_source(tmp_path / "d.h5") as src:
        assert (src.sample_shape, src.layout) == ((2, 40), "NCL")
        _check_ranges(src, X3, y)


def test_csv_source_header_label_column_and_headerless(tmp_path, arrays):
    X, y = arrays
    names = np.array(["normal", "abnormal"])[y % 2]
    with open(tmp_path / "h.csv", "w") as fh:
        fh.write(",".join([f"x{i}" for i in range(20)] + ["label"] + [f"x{i}" for i in range(20, 40)]) + "\n")
        for row, lab in zip(X, names):
            fh.write(",".join([repr(float(v)) for v in row[:20]] + [lab] + [repr(float(v)) for v in row[20:]]) + "\n")
            if lab == "normal" and row[0] > 2.5:
                fh.write("\n")  # blank lines are skipped
    with open_source(tmp_path / "h.csv") as src:
        assert src.classes == ["abnormal", "normal"] and src.meta["label_column"] == "label"
        _check_ranges(src, X, (names == "normal").astype(int))
    np.savetxt(tmp_path / "n.csv", np.column_stack([X, y]), delimiter=",")
    with open_source(tmp_path / "n.csv", label=-1) as src:
        _check_ranges(src, X, y)


def test_source_errors(tmp_path, arrays):
    X, _ = arrays
    np.savez(tmp_path / "a.npz", X=X)
    with pytest.raises(InputError, match="cannot be streamed") as e:
        open_source(tmp_path / "a.npz")
    assert e.value.parameter == "path" and ".npy" in str(e.value)
    with pytest.raises(MissingFileError):
        open_source(tmp_path / "missing.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    with pytest.raises(DataError, match="Fortran"):
        open_source(tmp_path / "f.npy")
    np.save(tmp_path / "X.npy", X)
    with pytest.raises(ShapeError, match="one label per sample"):
        open_source(tmp_path / "X.npy", labels=np.zeros(7, int))
    with pytest.raises(InputError, match="labels="):
        open_source(tmp_path / "X.npy", label="y")
    bad = X.copy()
    bad[1234, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with open_source(tmp_path / "nan.npy") as src, pytest.raises(DataError, match="row 1234"):
        src.read(1000, 2000)
    with open(tmp_path / "X.npy", "r+b") as fh:  # truncate the file: the header promises more
        fh.truncate(5000)
    with pytest.raises(DataError, match="truncated"):
        open_source(tmp_path / "X.npy")


# ---- streamed explain -----------------------------------------------------------------------------


def test_stream_explain_equals_in_memory_explain(net, npy, tmp_path, arrays):
    X, y = arrays
    res = stream_explain(net, npy[0], "saliency,gradcam,smoothgrad", tmp_path / "out", chunk_rows=1000,
                         target="label", labels=npy[1], progress=False)
    assert res["computed"] == {"saliency": 3, "gradcam": 3, "smoothgrad": 3}
    for method in ("saliency", "gradcam"):
        maps, targets, rec = read_maps(res["files"][method])
        ref = trustmap.explain(net, X, method=method, target=y)
        np.testing.assert_allclose(maps, ref.maps, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(targets, y)
        assert rec["method"] == method and rec["shape"] == [2500, 40] and rec["layout"] == "NL"
        assert isinstance(maps, np.memmap)
    # a method with randomness: each chunk equals explaining that chunk alone (seeds per sample in the chunk)
    maps, _, _ = read_maps(res["files"]["smoothgrad"])
    for a, b in ((0, 1000), (2000, 2500)):
        ref = trustmap.explain(net, X[a:b], method="smoothgrad", target=y[a:b])
        np.testing.assert_allclose(maps[a:b], ref.maps, rtol=1e-5, atol=1e-6)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["stream"]["chunk_rows"] == 1000 and run["n"] == 2500
    assert not list((tmp_path / "out").glob("*.partial")) and not list((tmp_path / "out").glob("*.progress.json"))


def test_parquet_output_and_inputs_of_every_format_agree(net, npy, tmp_path, arrays):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, y = arrays
    flat = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 40)
    pq.write_table(pa.table({"x": flat, "y": pa.array(y)}), tmp_path / "d.parquet", row_group_size=333)
    a = stream_explain(net, npy[0], "gradcam", tmp_path / "a", chunk_rows=600, progress=False)
    b = stream_explain(net, tmp_path / "d.parquet", "gradcam", tmp_path / "b", chunk_rows=600, format="parquet",
                       progress=False)
    assert b["files"]["gradcam"].is_dir() and len(list(b["files"]["gradcam"].glob("part-*.parquet"))) == 5
    ma, ta, _ = read_maps(a["files"]["gradcam"])
    mb, tb, rb = read_maps(b["files"]["gradcam"])
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(ta, tb)
    assert rb["storage"] == "parquet" and rb["data"]["format"] == "parquet"


def test_rerun_skips_finished_work_and_refuses_other_settings(net, npy, tmp_path):
    out = tmp_path / "out"
    stream_explain(net, npy[0], "saliency", out, chunk_rows=1000, progress=False)
    again = stream_explain(net, npy[0], "saliency", out, chunk_rows=1000, progress=False)
    assert again["computed"] == {"saliency": 0} and again["skipped"] == {"saliency": 3}
    with pytest.raises(StreamConflictError, match="made differently") as e:
        stream_explain(net, npy[0], "saliency", out, chunk_rows=500, progress=False)
    assert e.value.parameter == "out" and "overwrite" in str(e.value)
    redo = stream_explain(net, npy[0], "saliency", out, chunk_rows=500, progress=False, overwrite=True)
    assert redo["computed"] == {"saliency": 5}


_KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    from trustmap.zoo import mnist1d_cnn
    from trustmap.stream import stream_explain
    torch.manual_seed(0)
    stream_explain(mnist1d_cnn(), sys.argv[1], "integrated_gradients", sys.argv[2], chunk_rows=250,
                   format=sys.argv[3], progress=False, params={"integrated_gradients": {"n_steps": 64}})
""")


@pytest.mark.parametrize("fmt", ["npy", "parquet"])
def test_killed_run_resumes_without_recomputing_finished_chunks(net, npy, tmp_path, fmt):
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(npy[0]), str(out), fmt], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ledger = out / "integrated_gradients.progress.json"
    deadline = time.time() + 120
    done_before: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        if ledger.exists():
            try:
                done_before = json.loads(ledger.read_text())["done"]
            except (ValueError, KeyError):
                done_before = []
            if len(done_before) >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    done_before = json.loads(ledger.read_text())["done"]
    assert 2 <= len(done_before) < 10
    final = out / f"integrated_gradients.{fmt}"
    assert not final.exists()  # nothing half-written under the final name
    res = stream_explain(net, npy[0], "integrated_gradients", out, chunk_rows=250, format=fmt, progress=False,
                         params={"integrated_gradients": {"n_steps": 64}})
    assert res["skipped"]["integrated_gradients"] == len(done_before)
    assert res["computed"]["integrated_gradients"] == 10 - len(done_before)
    maps, targets, _ = read_maps(final)
    ref = stream_explain(net, npy[0], "integrated_gradients", tmp_path / "ref", chunk_rows=250, format=fmt,
                         progress=False, params={"integrated_gradients": {"n_steps": 64}})
    ref_maps, ref_targets, _ = read_maps(ref["files"]["integrated_gradients"])
    np.testing.assert_array_equal(maps, ref_maps)
    np.testing.assert_array_equal(targets, ref_targets)
    assert not ledger.exists() and not list(out.glob("*.partial"))


_RSS_SCRIPT = textwrap.dedent("""
    import sys, json, numpy as np, torch
    from trustmap.zoo import mnist1d_cnn
    from trustmap.stream import stream_explain
    torch.manual_seed(0)
    n = int(sys.argv[1])
    path = sys.argv[2] + f"/X{n}.npy"
    with open(path, "wb") as fh:  # written with plain writes: no page of it is mapped into this process
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (n, 40)})
        for a in range(0, n, 50000):
            fh.write(np.random.default_rng(a).normal(size=(min(50000, n - a), 40)).astype(np.float32).tobytes())
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak (VmHWM) to the current RSS
        fh.write("5")
    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    before = rss("VmRSS")
    stream_explain(mnist1d_cnn(), path, "saliency", sys.argv[2] + f"/out{n}", chunk_rows=4096, progress=False)
    print(json.dumps({"before": before, "peak": rss("VmHWM")}))
""")


@pytest.mark.slow
def test_resident_memory_does_not_grow_with_the_file(tmp_path):
    """Peak RSS explaining 400,000 samples (64 MB in, 64 MB out) = peak for 10,000, within 24 MB."""
    script = tmp_path / "rss.py"
    script.write_text(_RSS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    peaks = {}
    for n in (10_000, 400_000):
        out = subprocess.run([sys.executable, str(script), str(n), str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[n] = json.loads(out.stdout.strip().splitlines()[-1])["peak"]
    assert peaks[400_000] - peaks[10_000] < 24, peaks
    maps, _, _ = read_maps(tmp_path / "out400000" / "saliency.npy")
    assert maps.shape == (400_000, 40) and np.isfinite(maps[-5:]).all() and np.abs(maps[-5:]).sum() > 0


# ---- evaluate and locate ----------------------------------------------------------------------------


def test_stream_evaluate_equals_the_in_memory_report(net, npy, tmp_path, arrays):
    from trustmap.metrics import model_report

    X, y = arrays
    rep, files = stream_evaluate(net, npy[0], tmp_path / "ev", labels=npy[1], chunk_rows=700, progress=False)
    ref = model_report(net, X, y)
    assert rep.accuracy == pytest.approx(ref.accuracy)
    np.testing.assert_array_equal(rep.confusion, ref.confusion)
    np.testing.assert_allclose(rep.roc_auc, ref.roc_auc, rtol=1e-6)
    probs = np.load(files[0])
    np.testing.assert_allclose(probs, trustmap.load_model(net).probs(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="needs labels"):
        stream_evaluate(net, npy[0], tmp_path / "ev2", progress=False)


@pytest.mark.filterwarnings("ignore:no tau on the path")
def test_stream_locate_fits_on_a_subset_and_locates_every_sample(tmp_path):
    from trustmap.localizer.tasks import distractor_task, window_mass

    sys.path.insert(0, str(Path(__file__).parent))
    from test_localizer import tiny_cnn, train

    task = distractor_task(1500, seed=11, length=96, bump_at=60, distractor_at=20)
    model = train(tiny_cnn(1, 96, 2), task.X[:1200], task.y[:1200], epochs=6, seed=11)
    np.save(tmp_path / "X.npy", task.X[:, 0])
    np.save(tmp_path / "y.npy", task.y)
    res = stream_locate(model, tmp_path / "X.npy", tmp_path / "loc", labels=tmp_path / "y.npy", fit_samples=1000,
                        chunk_rows=400, progress=False, epochs=5, n_boot=300, batch_size=64)
    assert res["fit_samples"] == 1000 and res["n"] == 1500
    masks, _, rec = read_maps(res["masks"])
    assert masks.shape == (1500, 96) and rec["tau"] == res["tau"]
    loc = trustmap.Localizer.load(tmp_path / "loc" / "localizer.safetensors", model=model)
    np.testing.assert_allclose(masks, loc.locate(task.X[:, 0]).maps, atol=1e-6)
    pos = task.y == 1
    wm = window_mass(np.asarray(masks)[pos][:, None], task.centers[pos], radius=10)
    assert wm["mass"].mean() > 0.8, wm["mass"].mean()
    again = stream_locate(model, tmp_path / "X.npy", tmp_path / "loc", labels=tmp_path / "y.npy", fit_samples=1000,
                          chunk_rows=400, progress=False, epochs=5, n_boot=300, batch_size=64)
    assert again["tau"] == res["tau"]  # the saved localizer was reused, not fitted again


# ---- CLI ----------------------------------------------------------------------------------------------


def test_cli_streams_explain_and_evaluate(net, npy, tmp_path, arrays, capsys):
    from trustmap.cli import main
    from trustmap.zoo import save

    X, y = arrays
    model_path = save(net, tmp_path / "model")
    out = tmp_path / "cli"
    rc = main(["explain", "--model", str(model_path), "--data", str(npy[0]), "--labels", str(npy[1]),
               "--stream", "--chunk-rows", "1000", "--method", "saliency,gradcam", "--target", "label",
               "--format", "parquet", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "2500 samples" in text and "3 chunk(s)" not in text
    maps, targets, _ = read_maps(out / "saliency.parquet")
    np.testing.assert_allclose(maps, trustmap.explain(net, X, method="saliency", target=y).maps, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(targets, y)
    rc = main(["evaluate", "--model", str(model_path), "--data", str(npy[0]), "--labels", str(npy[1]), "--stream",
               "--out", str(tmp_path / "ev"), "--quiet", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(float((net_pred(net, X) == y).mean()))
    rc = main(["explain", "--model", str(model_path), "--data", str(npy[0]), "--stream", "--n", "5",
               "--out", str(out)])
    assert rc == 2 and "--n" in capsys.readouterr().err


def net_pred(net, X):
    with torch.no_grad():
        return net(torch.from_numpy(X)[:, None]).argmax(1).numpy()


def test_stream_score_equals_scoring_the_same_rows_in_memory(net, npy, tmp_path, arrays, capsys):
    from trustmap.cli import main
    from trustmap.metrics import evaluate_explanations
    from trustmap.stream import stream_score
    from trustmap.zoo import save

    X, y = arrays
    stream_explain(net, npy[0], "saliency,gradcam", tmp_path / "ex", chunk_rows=1000, progress=False)
    res = stream_score(net, npy[0], tmp_path / "ex", tmp_path / "sc", ["average_drop", "deletion"], n=300,
                       labels=npy[1], n_boot=200, n_perm=200)
    rows = res["rows"]
    assert len(rows) == 300 and len(set(rows.tolist())) == 300
    ref = evaluate_explanations(net, X[rows], y[rows], {
        "saliency": trustmap.explain(net, X[rows], method="saliency"),
        "gradcam": trustmap.explain(net, X[rows], method="gradcam")}, ["average_drop", "deletion"],
        n_boot=200, n_perm=200)
    for meth in ("saliency", "gradcam"):
        for met in ("average_drop", "deletion"):
            assert res["scores"].value(meth, met) == pytest.approx(ref.value(meth, met), rel=1e-5, abs=1e-7)
    assert (tmp_path / "sc" / "scores.json").exists()
    # scoring against another file is refused
    np.save(tmp_path / "other.npy", X[::-1].copy())
    with pytest.raises(DataError, match="another data file"):
        stream_score(net, tmp_path / "other.npy", tmp_path / "ex", n=50)
    model_path = save(net, tmp_path / "model")
    rc = main(["evaluate", "--model", str(model_path), "--data", str(npy[0]), "--labels", str(npy[1]), "--stream",
               "--explanations", str(tmp_path / "ex"), "--metrics", "average_drop", "--score-samples", "200",
               "--out", str(tmp_path / "ev"), "--quiet"])
    assert rc == 0
    assert "scores on 200 random samples" in capsys.readouterr().out
