import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch
import yaml

from compressor.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tiny",
    "out": "runs",
    "data": {"train": "synthetic:classes=4,train=128,test=64"},
    "teacher": {"arch": "resnet14", "recipe": {"epochs": 1, "batch_size": 32}},
    "hints": {"samples": 64, "k": 3},
    "distill": {"student": "resnet8", "recipe": {"epochs": 1, "batch_size": 32}, "loss": {"method": "at+kd"}},
    "export": {"calib_samples": 32},
    # memory in the profiling process: the fresh-process worker (3-4 s a model and backend) has its own test in test_profile.py
    "profile": {
        "backends": ["torch", "ort-cpu", "ort-cpu-int8"],
        "batches": [1, 2],
        "eval_samples": 32,
        "iters": 3,
        "memory_worker": False,
    },
}


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_pipeline_runs_skips_and_redoes(tmp_path, capsys, monkeypatch):
    cfg = write(tmp_path / "p.yaml", TINY)
    assert main(["run", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "tiny"
    for f in ("config.yaml", "teacher/teacher.pt", "hints/plan.json", "hints/similarity.png", "distill/student.pt",
              "export/student.onnx", "export/student.int8.onnx", "profile/report.html", "profile/report.json", "report.html",
              "report.md", "training.png", "compare/vanilla/student.pt", "compare/compare.json"):  # fmt: skip
        assert (run / f).exists(), f
    out = capsys.readouterr().out
    assert "report:" in out and out.count("done in") == 6

    assert main(["run", str(cfg), "--quiet"]) == 0  # nothing changed: every stage skipped
    assert capsys.readouterr().out.count("unchanged, skipped") == 6

    assert main(["run", str(cfg), "--quiet", "--from", "export"]) == 0
    out = capsys.readouterr().out
    assert out.count("unchanged, skipped") == 4 and "[export] running" in out and "[profile] running" in out

    assert main(["run", str(cfg), "--quiet", "--set", "distill.recipe.epochs=2"]) == 0  # a changed input redoes what depends on it
    out = capsys.readouterr().out
    assert "[teacher] unchanged" in out and "[hints] unchanged" in out
    assert "[distill] running" in out and "[compare] running" in out and "[export] running" in out

    # a comparison that beat the distilled student beyond seed noise is the one exported and profiled
    for where in ("compressor.evidence", "compressor.report"):
        monkeypatch.setattr(f"{where}.better_than_distilled", lambda report: "vanilla" if report["comparisons"] else None)
    assert main(["run", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "the vanilla student beat the distilled one beyond seed noise" in out and "[export] running" in out
    assert json.loads((run / "export" / "student.json").read_text())["source"] == str(run / "compare" / "vanilla" / "student.pt")
    assert "it is the student exported and profiled here (from compare/vanilla/student.pt)" in (run / "report.md").read_text()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"distill": {"student": "resnet9"}}, "distill.student: unknown model 'resnet9'"),
        ({"distill": {"student": "resnet8", "loss": {"method": "at+kdd"}}}, "unknown distillation method 'kdd'"),
        ({"hints": {"k": 0}}, "hints.k"),
        ({"profile": {"backends": ["tensorflow"]}}, "unknown backend 'tensorflow'"),
        ({"teacher": {"recipe": {"lr": -1}}, "export": {"opset": 9}}, "teacher.recipe.lr"),
        ({"data": {"train": "mnist"}}, "unknown dataset 'mnist'"),
        ({"name": "a/b"}, "name"),
        ({"export": {"opset": 9}}, "export: --opset 9"),  # the export stage's own check, before the teacher trains
    ],
)
def test_bad_config_values_exit_2_and_write_nothing(tmp_path, capsys, change, message):
    config = {**TINY, **change}
    if "teacher" in change:
        config["teacher"] = {**TINY["teacher"], **change["teacher"]}
    assert main(["run", str(write(tmp_path / "p.yaml", config)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "runs").exists()


def test_invalid_yaml_and_missing_teacher(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("teacher: {arch: resnet8\n")
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    config = {**TINY, "teacher": {"checkpoint": "missing/teacher.pth"}}
    assert main(["run", str(write(tmp_path / "p.yaml", config)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and str(tmp_path / "missing" / "teacher.pth") in err  # resolved against the YAML's folder


def test_corrupt_image_in_training_data(tmp_path, capsys):
    import cv2
    import numpy as np

    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "img" / c / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "img" / "b" / "2.png").write_bytes(b"not a png")
    rc = main(["distill", "--student", "resnet8", "--method", "ce", "--data", f"imagefolder:{tmp_path / 'img'}:size=16",
               "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert rc == 2 and "b/2.png could not be decoded" in capsys.readouterr().err


def test_empty_dataset_exits_2(tmp_path, capsys):
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
    rc = main(["distill", "--student", "resnet8", "--method", "ce", "--data", f"imagefolder:{tmp_path / 'img'}", "--out",
               str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert rc == 2 and "holds no images" in capsys.readouterr().err and not (tmp_path / "o").exists()


def _distill_cmd(out: Path, epochs: int, teacher: Path) -> list[str]:
    return [sys.executable, "-m", "compressor.cli", "distill", "--teacher", str(teacher), "--student", "resnet8", "--method", "at+kd",
            "--data", "synthetic:classes=4,train=256,test=32", "--epochs", str(epochs), "--batch-size", "16",
            "--set", "optim.milestones=[2]", "--out", str(out), "--quiet"]  # fmt: skip


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
    teacher = tmp_path / "t.pt"
    torch.manual_seed(0)
    from compressor.models import create_model

    torch.save(create_model("resnet14", num_classes=4).state_dict(), teacher)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_distill_cmd(tmp_path / "straight", 4, teacher), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_distill_cmd(tmp_path / "killed", 4, teacher), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch 3, after the epoch-2 checkpoint
    proc.wait()
    assert len(metrics.read_text().splitlines()) in (2, 3)
    subprocess.run(_distill_cmd(tmp_path / "killed", 4, teacher) + ["--resume"], check=True, env=env, capture_output=True)
    a = torch.load(tmp_path / "straight" / "student.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "student.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _kill_when(cmd: list[str], appeared, timeout: float = 240) -> list[Path]:
    """Run ``cmd`` and SIGKILL it the moment ``appeared()`` names a file (polled every 2 ms); the files seen.
    The process is killed while it goes on writing the files that follow."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, seen = time.time() + timeout, []
    while time.time() < deadline and proc.poll() is None and not (seen := appeared()):
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return seen


def _whole(folder: Path) -> int:
    """Every file under a final name in ``folder`` is complete; returns how many were checked."""
    checked = 0
    for f in folder.rglob("*"):
        if not f.is_file() or ".compressor-" in f.name or f.name == ".compressor.lock":
            continue
        if f.suffix == ".onnx":
            onnx.checker.check_model(onnx.load(str(f)))
        elif f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".html":
            assert f.read_text().rstrip().endswith("</html>"), f
        elif f.suffix == ".png":
            assert f.read_bytes()[-8:-4] == b"IEND", f  # a PNG's last chunk: the file is whole
        checked += 1
    return checked


def test_kill_during_export_or_profiling_leaves_no_half_written_artifact(tmp_path):
    """Killed right after the first file of a stage appears (while the next ones are being written):
    every file under a final name is whole, and the next run cleans up and finishes."""
    from compressor.models import create_model

    model = tmp_path / "m.pt"
    torch.save(create_model("resnet32x4", num_classes=4).state_dict(), model)
    out = tmp_path / "exp"
    export = [sys.executable, "-m", "compressor.cli", "export", str(model), "--out", str(out)]
    seen = _kill_when(export, lambda: list(out.glob("*.onnx")))
    assert seen, "the export never wrote its ONNX file: nothing was checked"
    assert _whole(out) >= 1
    assert subprocess.run([*export, "--overwrite"], capture_output=True).returncode == 0  # the killed run's lock and temps are no obstacle
    assert _whole(out) >= 2 and not list(out.glob(".*.compressor-*.tmp"))

    prof = tmp_path / "prof"
    profile = [sys.executable, "-m", "compressor.cli", "profile", str(model), "--backend", "torch,ort-cpu", "--batch", "1", "--iters", "5",
               "--warmup", "1", "--out", str(prof), "--quiet"]  # fmt: skip
    seen = _kill_when(profile, lambda: [p for p in (prof / "report.json", prof / "report.md") if p.exists()])
    assert seen, "the profile never wrote its report: nothing was checked"
    assert _whole(prof) >= 1


def test_no_shell_strings_in_the_code():
    sources = [p for d in ("compressor", "deploy", "models") for p in (ROOT / d).rglob("*.py")]
    offenders = [str(p) for p in sources if re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(", p.read_text())]
    assert offenders == []
