"""`trustmap explain --engine ray`: a warm pool of Ray actors gives the single-process maps; `--engine auto`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("ray.data", reason="the Ray engine needs trustmap[scale]")

import ray  # noqa: E402

from trustmap.errors import DataError, DependencyError, InputError, TargetError  # noqa: E402
from trustmap.stream import StreamConflictError, read_maps, stream_explain  # noqa: E402
from trustmap.stream.ray_engine import ray_explain, shutdown_ray_pool  # noqa: E402
from trustmap.zoo import mnist1d_cnn, save  # noqa: E402

N, CHUNK = 2000, 500  # four chunks: more chunks than workers, so a per-batch model load would show


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray")
    torch.manual_seed(0)
    net = mnist1d_cnn()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 40)).astype(np.float32)  # MNIST-1D shaped
    np.save(d / "X.npy", X)
    np.save(d / "y.npy", rng.integers(0, 10, N))
    return {"dir": d, "net": net, "model": save(net, d / "model"), "X": d / "X.npy", "y": d / "y.npy"}


@pytest.fixture(scope="module")
def reference(files):
    """The single-process streamed maps (same chunk_rows), computed once."""
    out = files["dir"] / "stream"
    stream_explain(files["model"], files["X"], "saliency,smoothgrad", out, chunk_rows=CHUNK, target="label",
                   labels=files["y"], progress=False)
    return {m: read_maps(out / f"{m}.npy") for m in ("saliency", "smoothgrad")}


@pytest.fixture(scope="module")
def session():
    """One local 2-CPU Ray for the tests below (the first test starts and stops its own)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    shutdown_ray_pool()
    assert ray.is_initialized()  # the pool's end leaves the Ray the user started as it was
    if started:
        ray.shutdown()


def _same(res_file, ref):
    maps, targets, rec = read_maps(res_file)
    np.testing.assert_allclose(maps, ref[0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(targets, ref[1])
    return rec


def test_cli_engine_ray_starts_a_local_ray_and_gives_the_streamed_maps(files, reference, tmp_path, capsys):
    from trustmap.cli import main

    if ray.is_initialized():
        pytest.skip("runs first, before the shared session starts")
    out = tmp_path / "cli"
    rc = main(["explain", "--model", str(files["model"]), "--data", str(files["X"]), "--labels", str(files["y"]),
               "--method", "saliency", "--target", "label", "--engine", "ray", "--workers", "2",
               "--chunk-rows", str(CHUNK), "--out", str(out), "--quiet", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["workers"] == 2 and res["model_loads"] == 2 and res["computed"] == {"saliency": N // CHUNK}
    _same(out / "saliency.parquet", reference["saliency"])
    assert not ray.is_initialized()  # the Ray it started is shut down
    assert json.loads((out / "run.json").read_text())["ray"]["session"] == "local"


def test_cli_engine_ray_needs_a_data_file(capsys):
    from trustmap.cli import main

    assert main(["explain", "--model", "m.safetensors", "--dataset", "mnist1d", "--engine", "ray"]) == 2
    assert "--engine ray needs --data" in capsys.readouterr().err


def test_two_workers_give_the_single_process_maps_each_row_once_model_loaded_per_actor(session, files, reference,
                                                                                       tmp_path):
    import pyarrow.dataset as pads

    shutdown_ray_pool()  # a cold pool: this test counts the loads
    out = tmp_path / "ray"
    res = ray_explain(files["model"], files["X"], "saliency,smoothgrad", out, chunk_rows=CHUNK, target="label",
                      labels=files["y"], num_workers=2, progress=False)
    assert res["computed"] == {"saliency": 4, "smoothgrad": 4} and res["n"] == N
    # 4 chunks on 2 actors: the model file was loaded twice (once per actor), not once per chunk or block
    assert res["workers"] == 2 and res["model_loads"] == 2 and not res["pool_reused"] and res["blocks"] >= 2
    for m in ("saliency", "smoothgrad"):  # smoothgrad draws random noise: seeded per chunk, as in the stream
        rec = _same(out / f"{m}.parquet", reference[m])
        assert rec["engine"] == "ray" and rec["workers"] == 2 and rec["storage"] == "parquet"
        assert rec["shape"] == [N, 40] and rec["chunk_rows"] == CHUNK and rec["method"] == m
        index = pads.dataset(str(out / f"{m}.parquet"), format="parquet").to_table(columns=["index"])
        assert np.array_equal(np.sort(index.column("index").to_numpy()), np.arange(N))  # every row exactly once
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "saliency.json", "saliency.parquet",
                                                     "smoothgrad.json", "smoothgrad.parquet"]  # no temporary left
    run = json.loads((out / "run.json").read_text())
    assert run["engine"] == "ray" and run["ray"]["model_loads"] == 2 and run["methods"] == ["saliency", "smoothgrad"]
    # the records are those of the streamed Parquet sink: a streamed run finds the work done
    again = stream_explain(files["model"], files["X"], "saliency", out, chunk_rows=CHUNK, target="label",
                           labels=files["y"], format="parquet", progress=False)
    assert again["computed"] == {"saliency": 0} and again["skipped"] == {"saliency": 4}


def test_model_object_is_shipped_untouched_reruns_skip_and_other_settings_are_refused(session, files, tmp_path):
    net = files["net"]
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = tmp_path / "obj"
    shutdown_ray_pool()  # a cold pool, so the object (not the file's pool) is what the actors load
    res = ray_explain(net, files["X"], ["saliency"], out, chunk_rows=CHUNK, target=3, num_workers=2, progress=False)
    ref = stream_explain(net, files["X"], "saliency", tmp_path / "s", chunk_rows=CHUNK, target=3, progress=False)
    maps, targets, _ = read_maps(res["files"]["saliency"])
    np.testing.assert_allclose(maps, read_maps(ref["files"]["saliency"])[0], rtol=0, atol=1e-6)
    assert (targets == 3).all() and res["model_loads"] == 2
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    net.eval()
    # the same run again: nothing to do, Ray not even used
    again = ray_explain(net, files["X"], ["saliency"], out, chunk_rows=CHUNK, target=3, num_workers=2,
                        progress=False)
    assert again["computed"] == {"saliency": 0} and again["skipped"] == {"saliency": 4} and again["model_loads"] == 0
    with pytest.raises(StreamConflictError, match="overwrite"):
        ray_explain(net, files["X"], ["saliency"], out, chunk_rows=CHUNK, target=4, progress=False)
    res = ray_explain(net, files["X"], ["saliency"], out, chunk_rows=1000, target=4, num_workers=1, overwrite=True,
                      progress=False)
    assert res["computed"] == {"saliency": 2} and res["model_loads"] == 0 and res["pool_reused"]  # the warm pool
    assert (read_maps(res["files"]["saliency"])[1] == 4).all()


def test_an_error_in_a_worker_comes_back_typed_and_leaves_no_output(session, files, tmp_path):
    X = np.load(files["X"])
    X[1234, 5] = np.nan  # found only when a worker reads that chunk
    np.save(tmp_path / "bad.npy", X)
    out = tmp_path / "bad"
    with pytest.raises(DataError, match="row 1234"):
        ray_explain(files["model"], tmp_path / "bad.npy", "saliency", out, chunk_rows=CHUNK, num_workers=2,
                    progress=False)
    # no final folder: the chunks written before the error wait, with their ledger, to be resumed
    assert sorted(p.name for p in out.iterdir()) == ["saliency.parquet.partial", "saliency.progress.json"]
    done = json.loads((out / "saliency.progress.json").read_text())["done"]
    assert 2 not in done and set(done) <= {0, 1, 3}  # row 1234 is in chunk 2


def test_typed_errors(session, files, tmp_path, monkeypatch):
    args = (files["model"], files["X"], "saliency", tmp_path / "e")
    for kw, param in [({"num_workers": 0}, "num_workers"), ({"num_workers": 1.5}, "num_workers"),
                      ({"num_gpus_per_worker": -1}, "num_gpus_per_worker"),
                      ({"num_cpus_per_worker": 0}, "num_cpus_per_worker"), ({"address": ""}, "address"),
                      ({"chunk_rows": 0}, "chunk_rows"), ({"params": {"lime": {}}}, "params")]:
        with pytest.raises(InputError) as e:
            ray_explain(*args, **kw)
        assert e.value.parameter == param
    with pytest.raises(TargetError, match="below 10"):
        ray_explain(*args, target=99)
    with pytest.raises(InputError) as e:  # this 2-CPU Ray has no GPU: refused instead of waiting forever
        ray_explain(*args, num_gpus_per_worker=1, progress=False)
    assert e.value.parameter == "num_gpus_per_worker"
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DependencyError, match=r"trustmap\[scale\]"):
        ray_explain(*args)


def test_pool_is_reused_across_calls_and_methods_maps_equal_in_process_then_shut_down(session, files, tmp_path):
    """A cheap (saliency) and an expensive method (occlusion), then other methods on the same warm pool."""
    shutdown_ray_pool()
    ref = tmp_path / "stream"
    stream_explain(files["model"], files["X"], "saliency,occlusion,smoothgrad", ref, chunk_rows=CHUNK, target="label",
                   labels=files["y"], progress=False)
    first = ray_explain(files["model"], files["X"], "saliency,occlusion", tmp_path / "r1", chunk_rows=CHUNK,
                        target="label", labels=files["y"], num_workers=2, progress=False)
    assert first["model_loads"] == 2 and not first["pool_reused"]
    from trustmap.stream import ray_engine

    actors = list(ray_engine._STATE["pool"].actors)
    pids = {a["pid"] for a in ray.get([a.info.remote() for a in actors])}
    second = ray_explain(files["model"], files["X"], "occlusion,smoothgrad", tmp_path / "r2", chunk_rows=CHUNK,
                         target="label", labels=files["y"], num_workers=2, progress=False)
    assert second["model_loads"] == 0 and second["pool_reused"]  # no process started, no model loaded
    assert {a["pid"] for a in ray.get([a.info.remote() for a in ray_engine._STATE["pool"].actors])} == pids
    run = json.loads((tmp_path / "r2" / "run.json").read_text())["ray"]
    assert run["pool_reused"] and run["model_loads"] == 0 and run["blocks"] >= 2
    for out, m in [("r1", "saliency"), ("r1", "occlusion"), ("r2", "occlusion"), ("r2", "smoothgrad")]:
        _same(tmp_path / out / f"{m}.parquet", read_maps(ref / f"{m}.npy")[:2])
    shutdown_ray_pool()
    assert ray.is_initialized() and ray_engine._STATE["pool"] is None  # the user's Ray is left running
    for a in actors:  # ... and our actors are gone
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(a.info.remote(), timeout=60)


def test_cli_engine_auto_picks_in_process_for_a_small_job_and_says_why(files, tmp_path, capsys):
    from trustmap.cli import main

    was = ray.is_initialized()
    out = tmp_path / "auto"
    rc = main(["explain", "--model", str(files["model"]), "--data", str(files["X"]), "--method", "saliency",
               "--engine", "auto", "--stream", "--chunk-rows", str(CHUNK), "--out", str(out), "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if "engine auto" in ln]
    assert len(line) == 1 and "-> in-process (it does not pay)" in line[0] and "rule: Ray if" in line[0]
    assert f"{N:,} rows" in line[0]
    run = json.loads((out / "run.json").read_text())
    assert run["engine"] == "stream" and run["engine_choice"]["engine"] == "local"
    choice = run["engine_choice"]
    assert choice["rows"] == N and choice["ray_saving_s"] < 1.25 * choice["ray_fixed_s"]
    assert ray.is_initialized() == was  # no Ray started for it
    maps, targets, _ = read_maps(out / "saliency.npy")
    assert maps.shape == (N, 40) and np.isfinite(maps).all() and (np.asarray(targets) >= 0).all()
    # the Python entry point: the same rule, the same line, recorded
    from trustmap.jobs.commands import explain

    res = explain(files["model"], files["X"], "saliency", tmp_path / "py", engine="auto", chunk_rows=CHUNK)
    assert res["record"]["engine"] == "stream" and res["record"]["engine_choice"]["reason"] == "it does not pay"
    assert "engine auto -> in-process (it does not pay)" in capsys.readouterr().err
    np.testing.assert_array_equal(read_maps(res["outputs"]["saliency"])[0], maps)  # the in-process maps
    arr = explain(files["model"], np.load(files["X"])[:50], "saliency", tmp_path / "arr", engine="auto", plots=0)
    assert arr["record"]["engine"] == "memory" and "data file" in arr["record"]["engine_choice"]["reason"]
    with pytest.raises(InputError) as e:  # Ray explains a whole file, not a built-in dataset
        explain(files["model"], None, "saliency", tmp_path / "x", dataset="mnist1d", engine="ray")
    assert e.value.parameter == "engine"
    assert ray.is_initialized() == was


def test_the_rule_and_the_blocks():
    """When Ray pays (work x (1 - 1/W) against its fixed cost), and blocks cut from the cost per row."""
    from trustmap.stream.ray_engine import PAYS_MARGIN, _cut, _decide, _take, block_rows_for

    small = _decide({"saliency": 15e-6}, 200_000, 2, 5.0, True)  # 3 s of work: saves 1.5 s < 5 s
    assert small["engine"] == "local" and small["reason"] == "it does not pay"
    big = _decide({"lime": 1e-3}, 200_000, 2, 5.0, True)  # 200 s of work: saves 100 s
    assert big["engine"] == "ray" and big["ray_saving_s"] == pytest.approx(100.0)
    edge = 2 * PAYS_MARGIN * 5.0 / 200_000  # saving exactly the margin: not enough
    assert _decide({"m": edge * 0.999}, 200_000, 2, 5.0, True)["engine"] == "local"
    assert _decide({"m": edge * 1.01}, 200_000, 2, 5.0, True)["engine"] == "ray"
    assert _decide({"lime": 1e-3}, 200_000, 1, 5.0, True)["engine"] == "local"  # one worker never saves
    assert _decide({"lime": 1e-3}, 200_000, 2, 5.0, False)["reason"] == "Ray is not installed"
    # about 1 s of work per block, at least 4 blocks per worker, at least 64 rows
    assert block_rows_for(1e-4, 1_000_000, 2, 160, 1, 4096) == 10_000
    assert block_rows_for(1e-4, 10_000, 2, 160, 1, 4096) == 1250
    assert block_rows_for(1.0, 10_000, 2, 160, 1, 4096) == 64
    # blocks cover each run of chunks that need the same methods; chunks come back whole, in order
    work = [(0, 0, 10, ["a"]), (1, 10, 20, ["a"]), (3, 30, 35, ["a"]), (4, 35, 45, ["a", "b"])]
    blocks = _cut(work, 7)
    assert blocks == [(0, 7, ["a"]), (7, 13, ["a"]), (13, 20, ["a"]), (30, 35, ["a"]), (35, 40, ["a", "b"]),
                      (40, 45, ["a", "b"])]
    buf = [(a, b, {k: (np.arange(a, b, dtype=np.float32)[:, None], np.arange(a, b)) for k in names})
           for a, b, names in blocks]
    for c, a, b, names in work:
        got = _take(buf, a, b)
        assert sorted(got) == sorted(names)
        assert all(np.array_equal(r.targets, np.arange(a, b)) for r in got.values())
    assert buf == []


def test_cli_engine_auto_picks_ray_when_the_fixed_cost_is_paid_back(session, files, tmp_path, capsys, monkeypatch):
    from trustmap.cli import main
    from trustmap.stream import ray_engine

    monkeypatch.setattr(ray_engine, "RAY_START_S", 0.0)  # a free start-up: any work split over 2 workers pays
    monkeypatch.setattr(ray_engine, "WARM_START_S", 0.0)
    out = tmp_path / "auto-ray"
    assert main(["explain", "--model", str(files["model"]), "--data", str(files["X"]), "--method", "saliency",
                 "--engine", "auto", "--workers", "2", "--chunk-rows", str(CHUNK), "--out", str(out), "--quiet"]) == 0
    assert "engine auto -> Ray (it pays)" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["engine"] == "ray" and run["engine_choice"]["engine"] == "ray" and run["engine_choice"]["workers"] == 2
    ref = stream_explain(files["model"], files["X"], "saliency", tmp_path / "s", chunk_rows=CHUNK, progress=False)
    _same(out / "saliency.parquet", read_maps(ref["files"]["saliency"])[:2])
    assert ray.is_initialized() and ray_engine._STATE["pool"] is None  # the CLI ended its pool, not the user's Ray
