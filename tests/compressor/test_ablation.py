"""``compressor ablate-hints``: every plan over seeds, paired intervals, shared and never-redone cells."""

import json

import pytest

from compressor.cli import main
from compressor.hevc.encoder import _candidates

TINY = ["--data", "synthetic:classes=4,train=96,test=48", "--arch", "resnet14", "--student", "resnet8", "--method", "at",
        "--seeds", "0,1", "--epochs", "1", "--k", "3", "--samples", "48", "--draws", "2", "--set", "teacher.recipe.epochs=1",
        "--set", "distill.recipe.batch_size=32", "--set", "teacher.recipe.batch_size=32", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    (root / "mine.json").write_text(json.dumps([1, 2, 3]))
    out = root / "abl"
    assert main(["ablate-hints", *TINY, "--plan-file", f"mine={root / 'mine.json'}", "--out", str(out)]) == 0
    return out


def test_table_has_every_plan_over_both_seeds_with_intervals(ablation):
    report = json.loads((ablation / "table.json").read_text())
    rows = {r["plan"]: r for r in report["rows"]}
    assert list(rows) == ["clustered", "baseline", "uniform", "forward", "reverse", "random (mean of 2 draws)", "mine", "vanilla"]
    plan = json.loads((ablation / "hints" / "plan.json").read_text())
    assert rows["clustered"]["teacher_points"] == plan["hints"] and rows["baseline"]["teacher_points"] == plan["baseline_hints"]
    assert rows["mine"]["teacher_points"] == [1, 2, 3]
    assert rows["reverse"]["teacher_points"] == rows["forward"]["teacher_points"][::-1]
    for name, r in rows.items():
        assert len(r["scores"]) == 2, name
        if name == "clustered":
            assert r["vs_clustered"] is None
            continue
        d = r["vs_clustered"]
        assert d["n"] == 2 and d["low"] <= d["mean"] <= d["high"], name
        # the difference is paired with clustered's own per-seed scores, from the cells' sidecars
        assert d["mean"] == pytest.approx(sum(r["scores"]) / 2 - sum(rows["clustered"]["scores"]) / 2)
    cells = report["cells"]
    for name in ("clustered", "vanilla"):
        for cell in cells[name]:
            side = json.loads((ablation / cell["folder"] / "student.json").read_text())
            assert side["metrics"]["final"]["top1"] == cell["top1"] and side["made_by"]["seed"] == cell["seed"]
    md = (ablation / "table.md").read_text()
    assert "| random-1 |" in md and "Verdict:" in md and "95% t interval" in md
    assert (ablation / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plans_with_the_same_points_share_their_cells(ablation):
    report = json.loads((ablation / "table.json").read_text())
    rows = {r["plan"]: r for r in report["rows"]}
    # resnet14 has 2 blocks per stage and the student sits at its stage ends: forward and uniform are the stage ends
    assert rows["uniform"]["same_as"] == "baseline" and rows["forward"]["same_as"] == "baseline"
    assert not (ablation / "cells" / "uniform").exists() and not (ablation / "cells" / "forward").exists()
    assert rows["uniform"]["scores"] == rows["baseline"]["scores"]


def test_same_seed_same_initial_weights_across_plans(ablation):
    digests = {}
    for folder in (ablation / "cells").glob("*/seed-0"):
        digests[folder.parent.name] = json.loads((folder / "student.json").read_text())["made_by"]["init_digest"]
    assert len(digests) >= 4 and len(set(digests.values())) == 1, digests
    other = json.loads((ablation / "cells" / "clustered" / "seed-1" / "student.json").read_text())["made_by"]["init_digest"]
    assert other != digests["clustered"]


def test_a_second_call_redoes_no_cell(ablation, capsys):
    weights = sorted((ablation / "cells").glob("*/seed-*/student.pt"))
    before = {p: p.stat().st_mtime_ns for p in weights}
    (ablation / "table.json").unlink()
    root = ablation.parent
    assert main(["ablate-hints", *TINY, "--plan-file", f"mine={root / 'mine.json'}", "--out", str(ablation)]) == 0
    assert {p: p.stat().st_mtime_ns for p in weights} == before
    assert json.loads((ablation / "table.json").read_text())["compute"]["cells"] == len(weights)


@pytest.mark.parametrize("extra, message", [
    (["--plans", "baseline,reverse"], "must include 'clustered'"),
    (["--plans", "clustered,middle"], "unknown plan rule"),
    (["--method", "kd"], "no hint term"),
    (["--plan-file", "mine=/nonexistent/plan.json"], "does not exist"),
])  # fmt: skip
def test_bad_ablations_exit_2_before_training(tmp_path, capsys, extra, message):
    out = tmp_path / "abl"
    assert main(["ablate-hints", *TINY, *extra, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


CROSS = ["--cross", "recognition", "--arch", "resnet8", "--student", "resnet8", "--seeds", "0,1", "--epochs", "1", "--k", "2",
         "--samples", "16", "--draws", "1", "--quiet", *sum((["--set", s] for s in ["data.train=16", "data.test=8", "teacher.epochs=1",
                                                                                    "optim.batch_size=8"]), [])]  # fmt: skip


@pytest.mark.skipif(not _candidates("auto"), reason="no HEVC encoder: neither x265 nor imageio-ffmpeg is installed")
def test_cross_distillation_hints_ablate_with_one_teacher_and_fixed_student_points(tmp_path, capsys):
    out = tmp_path / "cross"
    assert main(["ablate-hints", *CROSS, "--out", str(out)]) == 0
    report = json.loads((out / "table.json").read_text())
    rows = {r["plan"]: r for r in report["rows"]}
    assert list(rows) == ["clustered", "baseline", "uniform", "forward", "reverse", "random (mean of 1 draw)", "vanilla"]
    assert report["score"] == "top-1 %" and report["method"] == "cross at (recognition)"
    first = out / "cells" / "clustered" / "seed-0"
    plan = json.loads((first / "hints" / "plan.json").read_text())
    assert rows["clustered"]["teacher_points"] == plan["hints"] and rows["baseline"]["teacher_points"] == plan["baseline_hints"][-2:]
    assert rows["reverse"]["teacher_points"] == rows["forward"]["teacher_points"][::-1]
    runs = {p.parent.name + "/" + p.name: json.loads((p / "report.json").read_text()) for p in (out / "cells").glob("*/seed-*")}
    # only the teacher side moves: the student keeps its deepest 2 stage ends in every cell
    assert {tuple(r["student_points"]) for r in runs.values()} == {(2, 3)}
    assert not (out / "cells" / "clustered" / "seed-1" / "hints").exists()  # the plan is selected once, with the first seed
    for name, run in runs.items():
        config = (out / "cells" / name / "config.yaml").read_text()
        assert (f"checkpoint: {first / 'teacher.pt'}" in config) == (name != "clustered/seed-0"), name  # one teacher for every cell
        assert ("vanilla_student" in run["results"]) == name.startswith("clustered/")
    for name, r in rows.items():
        assert len(r["scores"]) == 2, name
        for seed, score in zip((0, 1), r["scores"], strict=True):
            if r["teacher_points"] is not None:  # the score is the cell's own cross student, from its report
                cell = runs[f"{r['same_as'] or name}/seed-{seed}"]
                assert cell["teacher_points"] == r["teacher_points"] and cell["results"]["cross_student"]["top1"] == score
        if name != "clustered":
            assert r["vs_clustered"]["n"] == 2 and r["vs_clustered"]["low"] is not None
    assert rows["vanilla"]["scores"] == [runs[f"clustered/seed-{s}"]["results"]["vanilla_student"]["top1"] for s in (0, 1)]
    assert "| plan | teacher points | top-1 % |" in (out / "table.md").read_text()

    weights = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*/seed-*/cross_student.pt")}
    assert main(["ablate-hints", *CROSS, "--out", str(out)]) == 0  # a second call trains nothing
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    capsys.readouterr()
    assert main(["ablate-hints", *CROSS, "--data", "digits", "--out", str(tmp_path / "bad")]) == 2
    assert "--cross takes its data" in capsys.readouterr().err and not (tmp_path / "bad").exists()
