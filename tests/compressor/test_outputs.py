"""Nothing a user already has is lost: earlier runs are refused unless --resume/--overwrite, folders are
locked while written, resumed finished runs are left alone, names stay inside their folder."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from compressor.models import create_model

from compressor.cli import main
from compressor.io import file_digest
from compressor.outdir import LOCK

DATA = "synthetic:classes=4,train=64,test=32,size=16"
FAST = ["--epochs", "1", "--batch-size", "32", "--quiet"]


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): file_digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out), *FAST]) == 0
    return out


def test_distill_refuses_a_folder_holding_a_run(finished_run, capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(finished_run), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and "student.pt" in err
    assert _snapshot(finished_run) == before


def test_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(finished_run), "--resume", *FAST]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final"]["top1"] >= 0
    assert _snapshot(finished_run) == before


def test_resume_with_other_settings_names_them_and_changes_nothing(finished_run, capsys):
    """A finished run resumed with another seed or loss setting: exit 2 naming the setting, not 'nothing to resume'."""
    before = _snapshot(finished_run)
    capsys.readouterr()
    argv = ["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(finished_run), "--resume", *FAST]
    assert main([*argv, "--seed", "5"]) == 2
    assert "train.seed: 0 -> 5" in capsys.readouterr().err
    assert main([*argv, "--set", "loss.gamma=0.5"]) == 2
    assert "loss.gamma: 1.0 -> 0.5" in capsys.readouterr().err
    assert _snapshot(finished_run) == before


def test_resume_finishes_a_run_killed_before_its_student_was_saved(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out), *FAST]) == 0
    final = json.loads((out / "student.json").read_text())["metrics"]["final"]
    (out / "student.pt").unlink()
    (out / "student.json").unlink()  # as if killed between the last checkpoint and the artifact
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out), "--resume", *FAST]) == 0
    assert json.loads((out / "student.json").read_text())["metrics"]["final"] == final


def test_overwrite_replaces_and_resume_with_overwrite_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out), *FAST]
    assert main(args) == 0
    first = file_digest(out / "student.pt")
    assert main([*args, "--overwrite", "--set", "train.seed=5"]) == 0
    assert file_digest(out / "student.pt") != first
    assert main([*args, "--overwrite", "--resume"]) == 2


def test_select_hints_export_profile_refuse_earlier_output(finished_run, tmp_path, capsys):
    teacher = finished_run / "student.pt"
    hints = ["select-hints", "--teacher", str(teacher), "--data", DATA, "--samples", "32", "--out", str(tmp_path / "h"), "--quiet"]
    export = ["export", str(teacher), "--out", str(tmp_path / "e")]
    profile = ["profile", str(teacher), "--backend", "ort-cpu", "--batch", "1", "--iters", "2", "--warmup", "0", "--quiet",
               "--out", str(tmp_path / "p")]  # fmt: skip
    for args in (hints, export, profile):
        assert main(args) == 0
        folder = Path(args[args.index("--out") + 1])
        before = _snapshot(folder)
        assert main(args) == 2, args[0]
        assert "--overwrite" in capsys.readouterr().err
        assert _snapshot(folder) == before
        assert main([*args, "--overwrite"]) == 0


def test_a_failed_command_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "hints"
    assert main(["select-hints", "--teacher", str(tmp_path / "missing.pth"), "--data", DATA, "--out", str(out)]) == 2
    assert not (tmp_path / "new").exists()
    profile_out = tmp_path / "p"
    onnx = tmp_path / "bad.onnx"
    onnx.write_bytes(b"not onnx")
    assert main(["profile", str(onnx), "--out", str(profile_out)]) == 2
    assert not profile_out.exists()


def test_output_that_is_a_file_is_refused(finished_run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert main(["export", str(finished_run / "student.pt"), "--out", str(blocker)]) == 2
    assert "is a file" in capsys.readouterr().err and blocker.read_text() == "mine"


def test_a_locked_folder_is_refused_and_a_stale_lock_taken_over(finished_run, tmp_path, capsys):
    out = tmp_path / "e"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        record = {"pid": sleeper.pid, "host": socket.gethostname(), "command": "export", "started": "now"}
        (out / LOCK).write_text(json.dumps(record))
        assert main(["export", str(finished_run / "student.pt"), "--out", str(out)]) == 2
        assert f"pid {sleeper.pid}" in capsys.readouterr().err and not (out / "student.onnx").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(["export", str(finished_run / "student.pt"), "--out", str(out)]) == 0  # its process is gone: stale
    assert (out / "student.onnx").exists() and not (out / LOCK).exists()


def test_two_distills_into_one_folder(tmp_path):
    """Started together, one runs and the other is refused: never a mix of both runs' files."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "compressor", "distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out),
           "--epochs", "2", "--batch-size", "32", "--quiet"]  # fmt: skip
    procs = [subprocess.Popen([*cmd, "--set", f"train.seed={s}"], stderr=subprocess.PIPE, text=True, env={**os.environ}) for s in (1, 2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    errors = "".join(p.stderr.read() for p in procs)
    assert codes == [0, 2], errors
    assert "being written by another" in errors or "already holds" in errors
    seed = json.loads((out / "student.json").read_text())
    assert (out / "config.yaml").read_text().count("seed:") == 1 and seed["digest"] == file_digest(out / "student.pt")


def test_pipeline_name_cannot_leave_the_runs_folder(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("precious\n")
    pipe = tmp_path / "runs_here" / "p.yaml"
    pipe.parent.mkdir()
    pipe.write_text("data: {train: 'synthetic:classes=4'}\nteacher: {arch: resnet8}\ndistill: {student: resnet8}\n")
    for name in ("..", "../x", "a/b", ".hidden"):
        assert main(["run", str(pipe), "--set", f"name={name}"]) == 2
    assert (tmp_path / "config.yaml").read_text() == "precious\n"


def test_hevc_convert_refuses_colliding_stems(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    image = np.full((16, 16, 3), 128, np.uint8)
    cv2.imwrite(str(src / "x.jpg"), image)
    cv2.imwrite(str(src / "x.png"), image)
    assert main(["hevc", "convert", str(src), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert "x.jpg and x.png" in err and not (tmp_path / "dst" / "x.png").exists()


def test_zoo_checkpoint_helper_unchanged(tmp_path):
    """The guard does not touch reading: a plain state_dict next to a foreign JSON still loads."""
    path = tmp_path / "t.pth"
    torch.save(create_model("resnet8", num_classes=4).state_dict(), path)
    (tmp_path / "t.json").write_text("{not json")
    assert main(["inspect", str(path), "--json"]) == 0


def test_repeated_runs_report_mean_and_std(tmp_path, capsys):
    import statistics

    out = tmp_path / "seeds"
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out), "--seeds", "1,2", *FAST]) == 0
    report = json.loads((out / "seeds.json").read_text())
    finals = [r["final_top1"] for r in report["runs"]]
    assert [r["seed"] for r in report["runs"]] == [1, 2] and (out / "seed-1" / "student.pt").exists()
    assert report["final_top1"]["mean"] == pytest.approx(statistics.fmean(finals))
    assert report["final_top1"]["std"] == pytest.approx(statistics.stdev(finals))
    assert "mean ± std" in (out / "seeds.md").read_text()
    before = _snapshot(out)
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(out), "--seeds", "1,2", "--resume",
                 *FAST]) == 0  # fmt: skip
    assert {k: v for k, v in _snapshot(out).items() if not k.startswith("seeds.")} == {
        k: v for k, v in before.items() if not k.startswith("seeds.")
    }  # finished seeds are left as they are
    assert (
        main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--out", str(tmp_path / "x"), "--seeds", "3", *FAST])
        == 2
    )


def test_a_killed_writers_temp_files_are_removed_and_nobody_elses(finished_run, tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / ".student.onnx.compressor-x1y2.tmp").write_bytes(b"half a file")  # left by a kill -9 mid-write
    (out / ".notes.tmp").write_text("the user's own")
    assert main(["export", str(finished_run / "student.pt"), "--out", str(out)]) == 0
    assert not (out / ".student.onnx.compressor-x1y2.tmp").exists() and (out / ".notes.tmp").read_text() == "the user's own"


def test_a_lock_being_written_is_respected_and_a_cut_one_taken_over(finished_run, tmp_path, capsys):
    """An empty lock is one created this instant (its record not yet written) or one a kill cut short: a
    young one holds the folder, an old one is stale."""
    out = tmp_path / "e"
    out.mkdir()
    (out / LOCK).write_text("")
    assert main(["export", str(finished_run / "student.pt"), "--out", str(out)]) == 2
    assert "being written by another" in capsys.readouterr().err and not (out / "student.onnx").exists()
    old = time.time() - 60
    os.utime(out / LOCK, (old, old))
    assert main(["export", str(finished_run / "student.pt"), "--out", str(out)]) == 0
    assert (out / "student.onnx").exists() and not (out / LOCK).exists()


def test_a_full_disk_while_taking_the_lock_leaves_no_lock_behind(tmp_path, monkeypatch):
    """ENOSPC at the very first write (the lock's record): a message, and no empty lock that would block the next run."""
    import errno

    from compressor import outdir
    from compressor.errors import UserError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outdir.json, "dump", full)
    with pytest.raises(UserError, match="no space left on the device"):
        with outdir.claim(tmp_path / "out", ["x"], "distill"):
            pass
    assert not (tmp_path / "out").exists()  # created for this command, so removed again with the lock
