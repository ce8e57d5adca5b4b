"""Quantization-aware distillation (``quant.qat``) end to end: the float stage, the fine-tuning
through the Q/DQ graph, the INT8 ONNX written from the learned steps, resumption after kill -9,
and the settings it refuses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compressor.cli import main

DATA = "synthetic:classes=4,train=96,test=32"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qat_teacher")
    assert main(["distill", "--student", "resnet8", "--data", DATA, "--method", "ce", "--epochs", "2", "--batch-size", "32",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    return out / "student.pt"


def _cmd(teacher: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "compressor.cli", "distill", "--teacher", str(teacher), "--arch", "resnet8", "--student", "resnet8",
            "--method", "at+kd", "--data", DATA, "--epochs", "1", "--batch-size", "16", "--out", str(out), "--quiet",
            "--set", "quant.qat=true", "--set", "quant.epochs=3", "--set", "quant.calibration=64", "--set", "quant.eval_samples=32",
            *extra]  # fmt: skip


def test_qad_writes_int8_from_learned_steps_and_resumes_exactly_after_kill_9(tmp_path, teacher):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cmd(teacher, tmp_path / "straight"), check=True, env=env, capture_output=True)
    straight = tmp_path / "straight"
    assert (straight / "float" / "student.pt").exists()  # no student.checkpoint: the float stage ran first
    sidecar = json.loads((straight / "export" / "student.int8.json").read_text())
    q = sidecar["int8"]
    assert sidecar["precision"] == "int8" and q["target"] == "cpu" and q["qat"]["epochs"] == 3 and q["parity"]["ok"]
    assert q["samples"] == 32 and 0 <= q["int8_top1"] <= 100 and (straight / "export" / "student.onnx").exists()
    # the written steps are the learned ones: the activation steps in the ONNX file equal the trained parameters
    state = torch.load(straight / "student.qat.pt", weights_only=True)
    learned = sorted(round(abs(v.item()), 7) for k, v in state.items() if k.startswith("act_scales."))
    model = onnx.load(str(straight / "export" / "student.int8.onnx"))
    scales = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    written = sorted(round(float(numpy_helper.to_array(i)), 7) for i in model.graph.initializer if i.name in scales)
    assert written == pytest.approx(learned, rel=1e-6)
    rows = [json.loads(r) for r in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and {"at", "kd", "ce"} <= set(rows[0]["train"])

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(teacher, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"  # the fine-tuning's (the float stage writes float/metrics.jsonl)
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 1) and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # during the fine-tuning, after its first checkpoint
    proc.wait()
    assert not (killed / "export" / "student.int8.onnx").exists()
    assert subprocess.run(_cmd(teacher, killed), env=env, capture_output=True).returncode == 2  # nothing overwritten
    subprocess.run(_cmd(teacher, killed, "--resume"), check=True, env=env, capture_output=True)
    again = torch.load(killed / "student.qat.pt", weights_only=True)
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    a = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(killed / "export" / "student.int8.onnx")).graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_qad_from_a_trained_student_with_the_tensorrt_target(tmp_path, teacher, capsys):
    out = tmp_path / "trt"
    assert main(["distill", "--teacher", str(teacher), "--arch", "resnet8", "--student", "resnet8", "--method", "kd", "--data", DATA,
                 "--batch-size", "16", "--out", str(out), "--set", f"student.checkpoint={teacher}", "--set", "quant.qat=true",
                 "--set", "quant.epochs=1", "--set", "quant.target=tensorrt", "--set", "quant.calibration=32",
                 "--set", "quant.eval_samples=32"]) == 0  # fmt: skip
    assert not (out / "float").exists()  # a trained student: no float stage
    printed = capsys.readouterr().out
    assert "INT8 (tensorrt, ONNX Runtime)" in printed and "student.int8.onnx" in printed
    model = onnx.load(str(out / "export" / "student.int8.onnx"))
    zero_points = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activation_zps = [zero_points[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activation_zps and all(z.dtype == np.int8 and int(z) == 0 for z in activation_zps)  # symmetric int8, TensorRT's only INT8
    assert json.loads((out / "export" / "student.int8.json").read_text())["int8"]["parity"]["ok"]
    capsys.readouterr()
    assert main(["export", str(out / "student.qat.pt"), "--out", str(tmp_path / "exp")]) == 2  # the training state is not a model
    assert "export/student.int8.onnx" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sets, message",
    [
        (["loss.method=dml"], "dml trains a cohort"),
        (["loss.method=letkd", "loss.params.letkd.templates=4"], "letkd attaches layers"),
        (["quant.target=gpu"], "quant.target"),
        (["train.amp=bf16"], "fake quantization needs fp32"),
        (["loss.method=averager", "loss.params.averager.exits=true"], "averager with exits"),
    ],
)
def test_qat_refuses_what_it_cannot_run_before_writing(tmp_path, teacher, capsys, sets, message):
    out = tmp_path / "refused"
    args = ["distill", "--teacher", str(teacher), "--arch", "resnet8", "--student", "resnet8", "--data", DATA, "--epochs", "1",
            "--out", str(out), "--quiet", "--set", "quant.qat=true"]  # fmt: skip
    assert main([*args, *sum((["--set", s] for s in sets), [])]) == 2
    assert message in capsys.readouterr().err and not out.exists()
