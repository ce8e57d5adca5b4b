import json
import subprocess
import sys

import pytest
import torch
from compressor.models import create_model

from compressor import __version__
from compressor.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0 and __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out


def test_a_usage_mistake_is_one_error_line_and_exit_2(capsys):
    assert main(["distill", "--lr", "inf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --lr: 'inf' is not a finite number") and "usage:" not in err and err.count("\n") == 1


def test_inspect_json_resnet110(capsys):
    assert main(["inspect", "resnet110", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) >= {"arch", "num_classes", "params", "macs", "input_size", "candidates", "baseline_hints"}
    assert info["arch"] == "resnet110" and info["num_classes"] == 100 and info["input_size"] == [32, 32]
    assert len(info["candidates"]) == 54 and info["baseline_hints"] == [18, 36, 54]
    assert info["candidates"][0] == {"index": 1, "name": "layer1.0", "stage": 1, "shape": [16, 32, 32]}
    assert info["candidates"][-1]["shape"] == [64, 8, 8]
    assert info["params"] == 1_736_564


def test_inspect_options(capsys):
    assert main(["inspect", "resnet34", "--num-classes", "10", "--input-size", "64", "96", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 10 and info["input_size"] == [64, 96]
    assert info["baseline_hints"] == [3, 7, 13, 16]
    assert info["candidates"][-1]["shape"] == [512, 2, 3]


def test_inspect_checkpoint_table(tmp_path, capsys):
    path = tmp_path / "save" / "models" / "wrn_16_2_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 1, "model": create_model("wrn_16_2", num_classes=10).state_dict(), "accuracy": 50.0}, path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "wrn_16_2" in out and "repdistiller" in out and "<- baseline" in out and "classes       10" in out


@pytest.mark.parametrize("args", [["--num-classes", "0"], ["--input-size", "0", "32"]])
def test_inspect_bad_values(capsys, args):
    assert main(["inspect", "resnet8", *args]) == 2
    assert "error:" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "compressor.cli", "inspect", "resnet8", "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out)["baseline_hints"] == [1, 2, 3]
    bad = subprocess.run([sys.executable, "-m", "compressor.cli", "inspect", "nonsense"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown model 'nonsense'" in bad.stderr


@pytest.mark.parametrize("name", ["yolov3_darknet53_s", "yolov3_mobilenetv2_s"])
def test_inspect_detectors(name, capsys):
    """A detector's classifier is a conv of A * (5 + C) filters; inspect reports C, not a traceback."""
    assert main(["inspect", name, "--input-size", "64", "64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 80 and info["candidates"]
