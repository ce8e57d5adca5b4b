import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch
from compressor.models import create_model

from compressor.checkpoint import load_checkpoint
from compressor.cli import main
from compressor.crossdistill import match_student_points
from compressor.crossdistill.data import DOMAINS, PairedSet, collate
from compressor.crossdistill.tasks import TASKS
from compressor.data.scenes import generate_plates
from compressor.hevc.encoder import _candidates

needs_encoder = pytest.mark.skipif(not _candidates("auto"), reason="no HEVC encoder: neither x265 nor imageio-ffmpeg is installed")

DETECTION = ["data.train=96", "data.test=32", "teacher.epochs=4", "student.epochs=4", "hints.samples=64", "optim.lr=0.004"]


def rerun_score(out, name, task_name):
    """Reload a saved network from its sidecar and score it again on the run's test split."""
    meta = json.loads((out / f"{name}.json").read_text())
    model = load_checkpoint(out / f"{name}.pt", arch=meta["arch"], num_classes=meta["num_classes"]).model
    root = out / "data"
    size = tuple(meta["input_size"])
    labels = root / "labels" if task_name == "detection" else None
    test = PairedSet(root / "pixel", root / "hevc", "test", size, labels, meta["num_classes"])
    d = DOMAINS.index(meta["domain"])
    batches = [(b[d], b[2]) for b in torch.utils.data.DataLoader(test, 16, collate_fn=collate)]
    return TASKS.get(task_name).evaluate(model, batches, size), meta["scores"]


@needs_encoder
def test_detection_hevc_teacher_to_pixel_student_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["cross-distill", "--example", "detection", "--out", str(out), "--quiet", *sum((["--set", s] for s in DETECTION), [])]) == 0
    printed = capsys.readouterr().out
    assert "vanilla_student" in printed and "cross_student" in printed and "AP50" in printed
    report = json.loads((out / "report.json").read_text())
    results = report["results"]
    ends = create_model("yolov3_darknet53_s").baseline_hints()[-3:]  # the deepest 3 of the backbone's stage ends
    trained = report["teacher_points"] != ends  # the stage-end run is the cross run when clustering chose them
    assert set(results) == {"teacher", "vanilla_student", "cross_student"} | ({"baseline_student"} if trained else set())
    assert report["baseline_points"] == ({"teacher": ends, "student": report["baseline_points"]["student"]} if trained else None)
    summary = (out / "report.md").read_text().split("## Summary")[1].split("## Teacher")[0]
    assert "AP50 over the same student trained alone" in summary
    assert ("AP50 over the teacher's stage-end hints" in summary) == trained
    assert results["teacher"]["domain"] == "hevc" and results["cross_student"]["domain"] == "pixel"
    for row in results.values():
        assert 0 <= row["AP50"] <= 100 and 0 <= row["mAP50-95"] <= row["AP50"]
    assert results["teacher"]["AP50"] > 0  # four epochs on 96 scenes already find plates
    assert results["teacher"]["params"] > results["cross_student"]["params"]
    assert len(report["teacher_points"]) == 3 and report["hint_plan"] == "hints/plan.json"
    assert (out / "hints" / "similarity.png").exists() and "| cross student |" in (out / "report.md").read_text()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {m["model"] for m in metrics} == {"teacher", "vanilla student", "cross student"} | ({"baseline student"} if trained else set())
    assert all("hint" in m for m in metrics if m["model"] == "cross student")
    again, saved = rerun_score(out, "cross_student", "detection")  # the saved student reloads and scores the same
    assert again == saved
    # select-hints works on a detector's backbone from the command line, on unlabelled images
    hevc_images = f"images:{out / 'data' / 'hevc'}:height=96,width=128"
    assert main(["select-hints", "--teacher", str(out / "teacher.pt"), "--arch", "yolov3_darknet53_s", "--data", hevc_images,
                 "--samples", "40", "--k", "3", "--out", str(tmp_path / "plan"), "--quiet"]) == 0  # fmt: skip
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert len(plan["hints"]) == 3 and all(n.startswith("backbone.") for n in plan["hint_names"])
    # nothing is overwritten by a second run into the same folder
    stamp = (out / "cross_student.pt").stat().st_mtime_ns
    assert main(["cross-distill", "--example", "detection", "--out", str(out), "--quiet"]) == 2
    assert "already holds" in capsys.readouterr().err and (out / "cross_student.pt").stat().st_mtime_ns == stamp


@needs_encoder
def test_recognition_with_cc_hints_end_to_end(tmp_path):
    out = tmp_path / "rec"
    sets = ["data.train=60", "data.test=30", "teacher.arch=resnet18", "student.arch=resnet20", "teacher.epochs=2", "student.epochs=2",
            "hints.method=cc", "hints.samples=60", "optim.batch_size=20", "vanilla=false", "baseline_hints=false"]  # fmt: skip
    assert main(["cross-distill", "--example", "recognition", "--out", str(out), "--quiet", *sum((["--set", s] for s in sets), [])]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"teacher", "cross_student"} and len(report["teacher_points"]) == 4
    assert report["hint_method"] == "cc" and report["lambda"] == 6.0
    again, saved = rerun_score(out, "cross_student", "recognition")
    assert again == saved and 0 <= saved["top1"] <= 100


@needs_encoder
def test_repeated_seeds_train_the_teacher_once_and_report_mean_and_std(tmp_path, capsys):
    out = tmp_path / "seeds"
    sets = ["data.train=24", "data.test=12", "teacher.arch=resnet8", "student.arch=resnet8", "teacher.epochs=1", "student.epochs=1",
            "hints.samples=24", "hints.k=2", "optim.batch_size=12", "baseline_hints=false"]  # fmt: skip
    given = sum((["--set", s] for s in sets), [])
    assert main(["cross-distill", "--example", "recognition", "--out", str(out), "--quiet", "--seeds", "3,4", *given]) == 0
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [3, 4] and set(summary["results"]) == {"teacher", "vanilla_student", "cross_student"}
    teacher = summary["results"]["teacher"]
    assert teacher["per_seed"][0] == teacher["per_seed"][1] and teacher["std"] == 0  # trained with seed 3, reused for seed 4
    assert len(summary["results"]["cross_student"]["per_seed"]) == 2 and "mean ± std" in (out / "seeds.md").read_text()
    assert (out / "seed-4" / "report.html").exists() and "over seeds [3, 4]" in capsys.readouterr().out
    one = ["cross-distill", "--example", "recognition", "--out", str(tmp_path / "one"), "--seeds", "5", *given]
    assert main(one) == 2 and "two or more different seeds" in capsys.readouterr().err  # one seed is not a repetition


def test_student_points_follow_the_teacher_hints_stages():
    teacher = create_model("yolov3_darknet53_s", num_classes=1)
    student = create_model("yolov3_mobilenetv2_s", num_classes=1)
    t_stage = {p.index: p.stage for p in teacher.hint_points()}
    s_stage = {p.index: p.stage for p in student.hint_points()}
    for hints in ([1, 3, 6], [4, 5, 7], [2, 4, 6, 7]):
        points = match_student_points(teacher, student, hints)
        assert len(set(points)) == len(points)
        assert [s_stage[p] for p in points] == [t_stage[h] for h in hints]
    # more teacher hints in one stage than the student has points there: the nearest free point
    assert len(set(match_student_points(create_model("resnet110"), create_model("resnet8"), [1, 2, 3]))) == 3
    with pytest.raises(ValueError, match="only 3 candidate points"):
        match_student_points(create_model("resnet110"), create_model("resnet8"), [1, 2, 3, 4])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["data.builtin=vehicles"], "does not fit task 'detection'"),
        (["student.arch=resnet18"], "detection needs a yolov3_"),
        (["teacher.arch=yolov3_nope"], "unknown model 'yolov3_nope'"),
        (["hints.k=0"], "hints.k"),
        (["optim.lr=-1"], "optim.lr"),
        (["data.builtin=null"], "data needs a root"),
        (["quant.qat=true", "amp=bf16"], "fake quantization needs fp32"),
    ],
)
def test_bad_configs_exit_2_before_writing(tmp_path, capsys, sets, message):
    out = tmp_path / "bad"
    assert main(["cross-distill", "--example", "detection", "--out", str(out), *sum((["--set", s] for s in sets), [])]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_root_and_unpaired_sets(tmp_path, capsys):
    assert main(["cross-distill", "--example", "detection", "--out", str(tmp_path / "o"), "--set", "data.builtin=null",
                 "--set", f"data.root={tmp_path / 'nowhere'}"]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    root = generate_plates(tmp_path / "plates", 4, 2)
    for split in ("train", "test"):
        (root / "hevc" / split).mkdir(parents=True)
    assert main(["cross-distill", "--example", "detection", "--out", str(tmp_path / "o2"), "--set", "data.builtin=null",
                 "--set", f"data.root={root}"]) == 2  # fmt: skip
    assert "do not pair up" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@needs_encoder
def test_reverse_ablation_with_ft_hints(tmp_path):
    """The thesis' reverse setting (pixel teacher -> HEVC student) with factor-transfer hints, whose
    paraphraser is trained first on the teacher's features (hints.init_epochs)."""
    out = tmp_path / "rev"
    sets = ["data.train=36", "data.test=12", "teacher.arch=resnet8", "student.arch=resnet8", "teacher.epochs=1", "student.epochs=1",
            "teacher.domain=pixel", "student.domain=hevc", "hints.method=ft", "hints.init_epochs=1", "hints.k=2",
            "hints.samples=36", "optim.batch_size=12", "vanilla=false", "data.image_size=[48,64]",
            "baseline_hints=false"]  # fmt: skip
    assert main(["cross-distill", "--example", "recognition", "--out", str(out), "--quiet", *sum((["--set", s] for s in sets), [])]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["teacher"]["domain"] == "pixel" and report["results"]["cross_student"]["domain"] == "hevc"
    assert report["hint_method"] == "ft" and report["lambda"] == 500.0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("hint" in m for m in metrics if m["model"] == "cross student")


@needs_encoder
def test_recognition_with_the_users_student(tmp_path):
    """A factory reference as the pixel-domain student: its points are found, its hints paired, its sidecar names it."""
    custom = f"{Path(__file__).resolve().parents[1] / 'custom_cnn.py'}:build"
    out = tmp_path / "rec"
    sets = ["data.train=48", "data.test=24", "teacher.arch=resnet8", f"student.arch={custom}", "student.kwargs={width: 4, blocks: 2}",
            "teacher.epochs=1", "student.epochs=1", "hints.samples=48", "hints.k=3", "optim.batch_size=24", "vanilla=false",
            "baseline_hints=false"]  # fmt: skip
    assert main(["cross-distill", "--example", "recognition", "--out", str(out), "--quiet", *sum((["--set", s] for s in sets), [])]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["results"]["cross_student"]["arch"] == custom and len(report["student_points"]) == 3


# --- on the one training loop: resume, AMP, divergence, DDP (issue 17) -------------------------------------

LOOP = ["data.train=16", "data.test=8", "teacher.arch=resnet8", "student.arch=resnet8", "teacher.epochs=2", "student.epochs=2",
        "hints.samples=16", "hints.k=2", "optim.batch_size=8", "baseline_hints=false"]  # fmt: skip


def _cross_cmd(out, *extra):
    sets = sum((["--set", s] for s in LOOP), [])
    return [
        sys.executable,
        "-m",
        "compressor.cli",
        "cross-distill",
        "--example",
        "recognition",
        "--out",
        str(out),
        "--quiet",
        *sets,
        *extra,
    ]


@needs_encoder
def test_cross_distill_resumes_after_kill_9_to_identical_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cross_cmd(tmp_path / "straight"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(_cross_cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "killed" / "train" / "cross_student" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 1):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # within the cross student's training, after its first checkpoint
    proc.wait()
    assert not (tmp_path / "killed" / "cross_student.pt").exists() and (tmp_path / "killed" / "vanilla_student.pt").exists()
    assert subprocess.run(_cross_cmd(tmp_path / "killed"), env=env, capture_output=True).returncode == 2  # nothing overwritten
    subprocess.run(_cross_cmd(tmp_path / "killed", "--resume"), check=True, env=env, capture_output=True)
    for name in ("teacher", "vanilla_student", "cross_student"):
        a = torch.load(tmp_path / "straight" / f"{name}.pt", weights_only=True)
        b = torch.load(tmp_path / "killed" / f"{name}.pt", weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    sidecar = json.loads((tmp_path / "killed" / "cross_student.json").read_text())
    assert sidecar["schema"] == "edge-compressor/student" and sidecar["made_by"]["student_hints"] and "final" in sidecar["metrics"]
    rows = [json.loads(r) for r in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["model"] == "cross student"] == [1, 2] and all("hint" in r for r in rows[-2:])
    # the run is finished: any number of further resumes leaves every file byte-identical (report.json's timings included)
    files = {p: p.read_bytes() for p in sorted((tmp_path / "killed").rglob("*")) if p.is_file()}
    for _ in range(2):
        subprocess.run(_cross_cmd(tmp_path / "killed", "--resume"), check=True, env=env, capture_output=True)
        assert {p: p.read_bytes() for p in sorted((tmp_path / "killed").rglob("*")) if p.is_file()} == files
    changed = subprocess.run([*_cross_cmd(tmp_path / "killed", "--resume"), "--set", "student.epochs=3"], env=env, capture_output=True,
                             text=True)  # fmt: skip
    assert changed.returncode == 2 and "other settings (student differ)" in changed.stderr
    assert {p: p.read_bytes() for p in sorted((tmp_path / "killed").rglob("*")) if p.is_file()} == files


@needs_encoder
def test_cross_distill_with_bf16_autocast_and_a_diverging_run_exits_2(tmp_path, capsys):
    sets = sum((["--set", s] for s in LOOP), [])
    assert main(["cross-distill", "--example", "recognition", "--out", str(tmp_path / "bf16"), "--quiet", *sets, "--set", "amp=bf16",
                 "--set", "vanilla=false"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "bf16" / "report.json").read_text())["ranks_identical"] is True
    assert main(["cross-distill", "--example", "recognition", "--out", str(tmp_path / "nan"), "--quiet", *sets, "--set", "optim.lr=1e30",
                 "--set", "optim.optimizer=sgd", "--set", "optim.clip_grad=null"]) == 2  # fmt: skip
    assert "the loss became" in capsys.readouterr().err


@needs_encoder
def test_cross_distill_under_torchrun_ends_with_identical_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = sum((["--set", s] for s in [*LOOP, "teacher.epochs=1", "student.epochs=1", "vanilla=false"]), [])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "compressor.cli", "cross-distill",
           "--example", "recognition", "--out", str(tmp_path / "ddp"), "--quiet", *sets]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert report["ranks"] == 2 and report["ranks_identical"] is True


@needs_encoder
def test_cross_distill_with_quantization_aware_fine_tuning(tmp_path):
    """quant.qat: the cross student is fine-tuned through its Q/DQ graph with the same hint loss from
    the compressed-domain teacher, and its INT8 ONNX is written from the learned steps."""
    sets = sum((["--set", s] for s in [*LOOP, "vanilla=false", "quant.qat=true", "quant.epochs=1", "quant.calibration=16"]), [])
    out = tmp_path / "qat"
    assert main(["cross-distill", "--example", "recognition", "--out", str(out), "--quiet", *sets]) == 0
    int8 = json.loads((out / "report.json").read_text())["int8"]
    assert int8["parity"]["ok"] and int8["qat"]["method"] == "cross-distillation (at)" and Path(int8["file"]).exists()
    assert json.loads((out / "cross_student.json").read_text())["schema"] == "edge-compressor/student"  # the student's own sidecar stays
    rows = [json.loads(r) for r in (out / "train" / "cross_student_qat" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "hint" in rows[0]["train"]


@needs_encoder
def test_cross_distill_detection_with_quantization_aware_fine_tuning(tmp_path):
    """A detector trains through its Q/DQ graph on the YOLO loss (the graph gives the raw maps; the
    box decoding stays float in the written file) and is scored by AP50 on ONNX Runtime."""
    tiny = ["data.train=24", "data.test=8", "teacher.epochs=1", "student.epochs=1", "hints.samples=24", "optim.batch_size=8",
            "vanilla=false", "baseline_hints=false", "quant.qat=true", "quant.epochs=1", "quant.calibration=16"]  # fmt: skip
    out = tmp_path / "det"
    assert main(["cross-distill", "--example", "detection", "--out", str(out), "--quiet", *sum((["--set", s] for s in tiny), [])]) == 0
    int8 = json.loads((out / "report.json").read_text())["int8"]
    assert int8["parity"]["ok"] and int8["parity"]["semantics"]["differing_pct"] <= 1.0 and int8["samples"] == 8
    assert 0 <= int8["int8_AP50"] <= 100 and int8["AP50_change"] == pytest.approx(int8["int8_AP50"] - int8["fp32_AP50"])
    rows = [json.loads(r) for r in (out / "train" / "cross_student_qat" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "hint" in rows[0]["train"] and "AP50" in rows[0]["eval"]
    graph = onnx.load(str(out / "export" / "cross_student.int8.onnx")).graph
    assert [o.name for o in graph.output] == ["boxes", "scores"]
    producer = {o: n.op_type for n in graph.node for o in n.output}
    assert not {"Sigmoid", "Exp"} & {producer.get(n.input[0]) for n in graph.node if n.op_type == "QuantizeLinear"}
    text = (out / "report.md").read_text()  # the run report shows the INT8 export and its quantization-aware training
    assert "cross_student.int8 | int8 |" in text and "Quantization-aware training (cross-distillation (at), 1 epochs): INT8 AP50" in text
