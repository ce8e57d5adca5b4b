"""``compressor ablate-hints``: every plan over seeds, paired intervals, shared and never-redone cells."""

import json

import pytest

from compressor.cli import main

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
