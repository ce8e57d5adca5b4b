"""The papers' tables as recipes: each runs end to end on tiny built-in data and writes the table's layout."""

import json
from pathlib import Path

import pytest
import yaml

from compressor.cli import main
from compressor.pipeline import RECIPES
from compressor.pipeline.table import load_table_config, table_markdown

TINY = "synthetic:classes=3,train=12,test=6"
PAPERS = {"pursuhint-table4", "pursuhint-table5", "pursuhint-table6", "ekd-table5-2", "ekd-table5-3", "letkd-table1", "letkd-table2",
          "letkd-table3", "averager-table4-1", "averager-table4-2", "cross-table5-1", "cross-table5-2", "cross-table5-3"}  # fmt: skip


def tiny_recipe(name: str, tmp_path: Path) -> Path:
    """The recipe with its first row, every column, one seed and a few steps on tiny data."""
    tree = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    tree.update(out=str(tmp_path / "runs"), seeds=[0], rows=tree["rows"][:1], data=TINY)
    tree["hints"] = {**tree.get("hints", {}), "samples": 6}
    tree["datasets"] = {k: TINY for k in tree.get("datasets", {})}
    for teacher in tree.get("teachers", {}).values():
        teacher["metric"] = "cka"  # R2CCA needs more samples than channels
    for key in ("teacher_recipe", "student_recipe"):
        tree[key] = {**tree.get(key, {}), "epochs": 1, "batch_size": 6, "milestones": []}
    for col in tree["columns"]:
        col["init_epochs"] = min(col.get("init_epochs", 0), 1)
        for params in col.get("params", {}).values():
            params.update({"samples": 12, "templates": 3} if "variant" in params or "supervision" in params else {})  # letKD's fit
    if tree.get("cross"):
        tree["cross_set"] = {**tree["cross_set"], "teacher.epochs": 1, "student.epochs": 1, "optim.batch_size": 4, "data.train": 8,
                             "data.test": 4, "hints.samples": 8, "hints.init_epochs": 0}  # fmt: skip
        tree["rows"][0]["set"] = {k: v for k, v in tree["rows"][0].get("set", {}).items() if k != "hints.init_epochs"}
        if tree["cross"] == "detection":  # the thesis' full-width YOLOv3s take minutes per step here; the same heads on small backbones
            tree["rows"][0].update(teacher="yolov3_darknet53_s", student="yolov3_mobilenetv2_s")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_every_table_of_the_papers_has_a_recipe():
    assert {p.stem for p in RECIPES.glob("*.yaml")} == PAPERS
    for name in sorted(PAPERS):  # each validates as shipped, with the paper's figure in every cell it prints
        config = load_table_config(RECIPES / f"{name}.yaml", ["data=synthetic"] if "datasets" not in (RECIPES / f"{name}.yaml").read_text()
                                   else [])  # fmt: skip
        assert config.table.source and all(len(r.paper) == len(config.columns) for r in config.rows)
        assert any(v is not None for r in config.rows for v in r.paper), name


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_recipe_runs_end_to_end_and_writes_the_tables_layout(name, tmp_path, capsys):
    assert main(["run", str(tiny_recipe(name, tmp_path)), "--quiet"]) == 0
    run = tmp_path / "runs" / name
    report = json.loads((run / "table.json").read_text())
    columns = [c["name"] for c in yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["columns"]]
    assert report["columns"] == columns and len(report["cells"]) == len(columns)
    assert all(0 <= cell["mean"] <= 100 and len(cell["ours"]) == 1 for cell in report["cells"])
    text = (run / "table.md").read_text()
    first = report["cells"][0]
    assert f"{first['paper']:.2f} / {first['mean']:.2f}" in text if first["paper"] is not None else "- / " in text
    header = text.splitlines()[[i for i, line in enumerate(text.splitlines()) if line.startswith("| ")][0]]
    if report["layout"] == "columns":  # methods down the side, as the paper prints them
        assert header.startswith("| method |") and all(f"| {c} |" in text for c in columns)
    else:
        assert header == "| teacher -> student | " + " | ".join(columns) + " |"
    assert "table:" in capsys.readouterr().out


def test_table_layout_and_seeds_summary():
    report = {"title": "T", "source": "S", "score": "error", "take": "final", "layout": "rows", "notes": ["n"], "data": "d",
              "seeds": [0, 1, 2], "columns": ["A", "B"], "rows": [{"teacher": "t", "student": "s", "score": "top5", "data": None}],
              "cells": [{"row": 0, "column": "A", "paper": 9.5, "mean": 10.0, "std": 0.5},
                        {"row": 0, "column": "B", "paper": None, "mean": 11.0, "std": 1.0}]}  # fmt: skip
    text = table_markdown(report)
    assert "error (%), mean ± std over 3 seeds (final epoch)" in text
    assert "| t -> s top-5 | 9.50 / 10.00 ± 0.50 | - / 11.00 ± 1.00 |" in text


def test_bad_recipes_exit_2_before_training(tmp_path, capsys):
    path = tiny_recipe("letkd-table3", tmp_path)
    assert main(["run", str(path), "--set", "rows=[{teacher: resnet56, student: resnet20, paper: [1, 2]}]"]) == 2
    assert "rows[0].paper has 2 figures for 4 columns" in capsys.readouterr().err
    assert main(["run", str(path), "--set", "rows=[{teacher: resnet57, student: resnet20, paper: [1, 2, 3, 4]}]"]) == 2
    assert "rows[0].teacher: unknown model 'resnet57'" in capsys.readouterr().err
    assert main(["run", str(path), "--seeds", "1,1"]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
