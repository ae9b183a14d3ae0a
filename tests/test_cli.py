"""The command line: usage errors, help, and the seeds' first task through `trustmap train`."""

import json
import subprocess
import sys

import numpy as np
import pytest

from trustmap.cli import main


def test_help_everywhere(capsys):
    for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        assert "usage: trustmap" in capsys.readouterr().out


def test_usage_error_is_one_line_and_exit_2():
    out = subprocess.run([sys.executable, "-m", "trustmap.cli", "train", "--epochs", "many"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--epochs" in lines[0] and "expected a positive integer, got 'many'" in lines[0]


def test_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "cifar"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_input_exits_2_with_the_typed_message(tmp_path, capsys):
    code = main(["evaluate", "--model", str(tmp_path / "missing.keras"), "--dataset", "mnist1d"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "model file not found" in err


def test_evaluate_needs_data(capsys, tmp_path):
    assert main(["evaluate", "--model", str(tmp_path / "m.keras")]) == 2
    assert "--dataset or --data" in capsys.readouterr().err


@pytest.mark.slow
def test_train_mnist1d_reaches_the_seed_accuracy(tmp_path, capsys):
    """The seeds' first task: the MNIST-1D CNN trained by `trustmap train` (seed report: 0.919)."""
    out = tmp_path / "run"
    code = main(["train", "--dataset", "mnist1d", "--out", str(out), "--quiet", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    report = json.loads((out / "report.json").read_text())
    assert report["accuracy"] >= 0.88
    assert abs(result["accuracy"] - report["accuracy"]) < 1e-12
    for name in ("model.safetensors", "model.json", "history.json", "report.txt", "model_report.png"):
        assert (out / name).stat().st_size > 0, name
    # the saved model evaluates to the same accuracy through `trustmap evaluate`
    assert main(["evaluate", "--model", str(out / "model.safetensors"), "--dataset", "mnist1d", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert abs(again["accuracy"] - report["accuracy"]) < 1e-9
    # and a data file in the user's own layout gives the same numbers
    from trustmap import datasets

    X, y = datasets.load("mnist1d", split="test")
    np.savez(tmp_path / "test.npz", X=X[:, :, None], y=y)  # (N, L, 1): NLC
    assert main(["evaluate", "--model", str(out / "model.safetensors"), "--data", str(tmp_path / "test.npz"),
                 "--json"]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert abs(from_file["accuracy"] - report["accuracy"]) < 1e-9


def test_every_command_takes_dash_o_for_its_output():
    from trustmap.cli import build_parser

    parser = build_parser()
    first = {"train": [], "evaluate": ["--model", "m.keras"], "explain": ["--model", "m.keras"],
             "locate": ["--model", "m.keras"], "demo": [], "counterfactual": ["--model", "m.keras", "--reference", "r.npy"]}
    for cmd, rest in first.items():
        args = parser.parse_args([cmd, *rest, "-o", "somewhere"])
        assert args.out == "somewhere", cmd
        assert parser.parse_args([cmd, *rest, "--out", "there"]).out == "there", cmd
