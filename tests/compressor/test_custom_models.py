"""Bring your own model: a user's residual CNN through every stage of the CLI, by factory reference,
and foreign ONNX files through ``profile``."""

import json
from pathlib import Path

import pytest
import torch
from compressor.models import create_model

from compressor.cli import main

CUSTOM = f"{Path(__file__).resolve().parents[1] / 'custom_cnn.py'}:build"
DATA = "synthetic:classes=4,train=96,test=48,size=16"
FAST = ["--epochs", "1", "--batch-size", "32", "--quiet"]


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def custom_teacher(tmp_path_factory):
    """The user's model trained from scratch (``--method ce``) by factory reference."""
    out = tmp_path_factory.mktemp("teacher")
    assert (
        main(["distill", "--method", "ce", "--student", CUSTOM, "--student-kwargs", "width=8", "--data", DATA, "--out", str(out), *FAST])
        == 0
    )
    return out / "student.pt"


def test_inspect_factory_reference(capsys):
    assert main(["inspect", CUSTOM, "--arch-kwargs", "width=4,blocks=2", "--num-classes", "3", "--json"]) == 0
    info = _json_out(capsys)
    assert info["arch"] == CUSTOM and info["num_classes"] == 3
    assert [c["name"] for c in info["candidates"]] == [f"body.{i}" for i in range(6)]
    assert info["baseline_hints"] == [2, 4, 6] and info["candidates"][-1]["shape"] == [16, 8, 8]


def test_sidecar_records_the_reference(custom_teacher, capsys):
    side = json.loads(custom_teacher.with_suffix(".json").read_text())
    assert side["arch"] == CUSTOM and side["arch_kwargs"] == {"width": 8}
    for trust in (["--trust-checkpoint"], ["--arch", CUSTOM]):  # rebuilt from the sidecar's reference once trusted or named
        assert main(["inspect", str(custom_teacher), "--json", *trust]) == 0
        info = _json_out(capsys)
        assert info["arch"] == CUSTOM and info["num_classes"] == 4 and info["params"] > 0


def test_a_sidecar_naming_code_runs_nothing_without_opt_in(custom_teacher, tmp_path, capsys):
    """A downloaded model.pt + model.json pair whose JSON names a function: every command that loads
    it exits 2 naming the reference and the opt-in, and nothing is imported."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef build(**kwargs):\n    return None\n")
    side = json.loads(custom_teacher.with_suffix(".json").read_text())
    pair = tmp_path / "model.pt"
    pair.write_bytes(custom_teacher.read_bytes())  # the same weights: the sidecar's digest still matches
    for ref in (f"{tmp_path / 'evil.py'}:build", "os:system"):
        pair.with_suffix(".json").write_text(json.dumps({**side, "arch": ref}))
        for cmd in (["inspect", str(pair)], ["export", str(pair), "--out", str(tmp_path / "e")],
                    ["profile", str(pair), "--out", str(tmp_path / "p"), "--quiet"],
                    ["select-hints", "--teacher", str(pair), "--data", DATA, "--out", str(tmp_path / "h"), "--quiet"],
                    ["distill", "--teacher", str(pair), "--student", "resnet8", "--method", "kd", "--data", DATA,
                     "--out", str(tmp_path / "d"), *FAST]):  # fmt: skip
            assert main(cmd) == 2, cmd
            err = capsys.readouterr().err
            assert f"names the model {ref!r}" in err and "--trust-checkpoint" in err and f"--arch {ref}" in err, (cmd, err)
            assert not marker.exists(), cmd
    assert not any((tmp_path / d).exists() for d in ("e", "p", "h"))


def test_custom_chain_hints_distill_export_profile(custom_teacher, tmp_path, capsys):
    hints = tmp_path / "hints"
    assert (
        main(
            [
                "select-hints",
                "--teacher",
                str(custom_teacher),
                "--arch",
                CUSTOM,  # a sidecar's factory reference is code: the user names it (or trusts the file)
                "--data",
                DATA,
                "--samples",
                "48",
                "--k",
                "3",
                "--out",
                str(hints),
                "--quiet",
            ]
        )
        == 0
    )
    plan = json.loads((hints / "plan.json").read_text())
    assert plan["teacher_arch"] == CUSTOM and plan["candidates"] == ["body.0", "body.1", "body.2"] and len(plan["hints"]) == 3

    # custom teacher -> zoo student, hints from the plan
    s1 = tmp_path / "s1"
    assert main(["distill", "--teacher", str(custom_teacher), "--arch", CUSTOM, "--student", "resnet8", "--method", "at+kd", "--hints",
                 str(hints / "plan.json"), "--data", DATA, "--out", str(s1), *FAST]) == 0  # fmt: skip
    assert json.loads((s1 / "student.json").read_text())["made_by"]["teacher_arch"] == CUSTOM

    # zoo teacher -> custom student (a raw state_dict: the architecture comes from its keys)
    zoo_teacher = tmp_path / "resnet8_teacher.pth"
    torch.save(create_model("resnet8", num_classes=4).state_dict(), zoo_teacher)
    s2 = tmp_path / "s2"
    assert main(["distill", "--teacher", str(zoo_teacher), "--student", CUSTOM, "--student-kwargs", "width=4", "--method", "fitnet+kd",
                 "--data", DATA, "--out", str(s2), *FAST]) == 0  # fmt: skip
    capsys.readouterr()

    export = tmp_path / "export"
    assert main(["export", str(s2 / "student.pt"), "--trust-checkpoint", "--int8", "--calib", DATA, "--out", str(export)]) == 0
    onnx_side = json.loads((export / "student.json").read_text())
    assert onnx_side["arch"] == CUSTOM and (export / "student.int8.onnx").is_file()

    profile = tmp_path / "profile"
    assert main(["profile", str(s2 / "student.pt"), "--arch", CUSTOM, "--arch-kwargs", "width=4", "--data", DATA, "--batch", "1",
                 "--iters", "3", "--warmup", "1", "--out", str(profile),
                 "--quiet"]) == 0  # fmt: skip
    report = json.loads((profile / "report.json").read_text())
    (model,) = report["models"]
    assert model["name"] == "custom_cnn.build" and all(b["status"] == "ok" for b in model["backends"])
    assert not list(Path(CUSTOM.rpartition(":")[0]).parent.glob("*.onnx"))  # nothing written beside the user's code


def test_factory_checkpoint_mismatch_is_listed(custom_teacher, capsys):
    assert main(["inspect", str(custom_teacher), "--arch", CUSTOM, "--arch-kwargs", "width=16"]) == 2
    err = capsys.readouterr().err
    assert "shape mismatches" in err and "stem.0.weight checkpoint (8, 3, 3, 3) vs model (16, 3, 3, 3)" in err


@pytest.mark.parametrize(
    "ref, message",
    [
        ("tests/nowhere.py:build", "does not exist"),
        (CUSTOM.replace(":build", ":missing"), "has no attribute 'missing'"),
        (CUSTOM.replace(":build", ":not_a_model"), "not a torch.nn.Module"),
        (CUSTOM.replace(":build", ":broken"), "raised RuntimeError"),
        ("not_a_real_package_abc:build", "cannot be imported"),
    ],
)
def test_bad_factories_exit_2(ref, message, capsys, tmp_path):
    assert main(["inspect", ref]) == 2
    assert message in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["distill", "--method", "ce", "--student", ref, "--data", DATA, "--out", str(out), *FAST]) == 2
    assert message in capsys.readouterr().err and not (out / "student.pt").exists()


def _foreign_onnx(path: Path, dynamic_hw: bool) -> Path:
    """An ONNX file exported by someone else's tooling: no sidecar, its own input name."""
    model = create_model("resnet8", num_classes=4).eval()
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    torch.onnx.export(model, torch.zeros(1, 3, 16, 16), str(path), input_names=["pixels"], output_names=["scores"],
                      dynamic_axes={"pixels": axes}, dynamo=False)  # fmt: skip
    return path


def test_profile_foreign_onnx_with_default_backends(tmp_path, capsys):
    path = _foreign_onnx(tmp_path / "someone_elses.onnx", dynamic_hw=False)
    assert main(["profile", str(path), "--batch", "1,2", "--iters", "3", "--warmup", "1", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "torch: skipped" in out and "ort-cpu-int8: skipped" in out and "--data" in out
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    (model,) = report["models"]
    status = {b["backend"]: b["status"] for b in model["backends"]}
    assert status == {"torch": "skipped", "ort-cpu": "ok", "ort-cpu-int8": "skipped"}
    assert model["input_size"] == [16, 16] and model["num_classes"] == 4
    assert model["params"] > 70_000  # from the graph's initializers (BN folded into the convolutions by the exporter)


def test_profile_foreign_onnx_needs_input_size_when_dynamic(tmp_path, capsys):
    path = _foreign_onnx(tmp_path / "dyn.onnx", dynamic_hw=True)
    out = tmp_path / "p"
    assert main(["profile", str(path), "--out", str(out)]) == 2
    assert "--input-size" in capsys.readouterr().err and not out.exists()
    assert main(["profile", str(path), "--input-size", "16", "16", "--data", DATA, "--batch", "1", "--iters", "3", "--warmup", "1",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    backends = {b["backend"]: b for b in report["models"][0]["backends"]}
    assert backends["ort-cpu-int8"]["status"] == "ok" and backends["ort-cpu"]["accuracy"]["samples"] == 48


def test_profile_refuses_a_damaged_onnx(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert main(["profile", str(bad), "--out", str(tmp_path / "p")]) == 2
    assert "not a readable ONNX file" in capsys.readouterr().err


def test_export_int8_from_a_foreign_onnx(tmp_path, capsys):
    path = _foreign_onnx(tmp_path / "theirs.onnx", dynamic_hw=False)
    out = tmp_path / "export"
    assert main(["export", str(path), "--int8", "--calib", DATA, "--calib-samples", "32", "--out", str(out)]) == 0
    assert "INT8 (cpu): top-1" in capsys.readouterr().out and (out / "model.int8.onnx").is_file()
    assert main(["export", str(path), "--fp16", "--out", str(tmp_path / "fp16")]) == 2
    assert "need the PyTorch model" in capsys.readouterr().err


def test_export_program_and_torchscript_archives(tmp_path, capsys):
    model = create_model("resnet8", num_classes=4).eval()
    program = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 16, 16),)), str(program))
    assert main(["inspect", str(program), "--json"]) == 2  # an archive is code: loaded only when trusted
    assert "torch.export archive" in capsys.readouterr().err
    assert main(["inspect", str(program), "--json", "--trust-checkpoint"]) == 0  # weights found under the zoo's keys
    info = _json_out(capsys)
    assert info["arch"] == "resnet8" and info["layout"] == "torch.export program"

    custom = torch.jit.trace(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2)), torch.zeros(1, 3, 8, 8)
    )
    scripted = tmp_path / "custom.ts"
    custom.save(str(scripted))
    assert main(["inspect", str(scripted)]) == 2
    assert "TorchScript archive" in capsys.readouterr().err
    assert main(["inspect", str(scripted), "--trust-checkpoint"]) == 2
    assert "path/to/file.py:function" in capsys.readouterr().err


def test_export_program_as_a_frozen_teacher(tmp_path, capsys):
    """A .pt2 of the user's model, no factory: the module tree comes back from the program, its points are found."""
    from compressor.models import build_model, hint_points

    from compressor.checkpoint import load_checkpoint

    model = build_model(CUSTOM, num_classes=4).eval()
    batch = torch.export.Dim("batch", min=1, max=512)
    dynamic = tmp_path / "dynamic.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 16, 16),), dynamic_shapes={"x": {0: batch}}), str(dynamic))
    loaded = load_checkpoint(dynamic, trusted=True)
    assert loaded.layout == "torch.export program" and loaded.input_size == (16, 16) and loaded.num_classes == 4
    assert hint_points(loaded.model) == hint_points(build_model(CUSTOM, num_classes=4, input_size=(16, 16)))  # taps included
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(loaded.model(x), model(x))

    out = tmp_path / "run"
    assert (
        main(
            [
                "distill",
                "--teacher",
                str(dynamic),
                "--trust-checkpoint",
                "--student",
                "resnet8",
                "--method",
                "at+kd",
                "--data",
                DATA,
                "--out",
                str(out),
                *FAST,
            ]
        )  # fmt: skip
        == 0
    )
    assert json.loads((out / "student.json").read_text())["made_by"]["teacher_arch"] == "dynamic.pt2 (torch.export program)"

    static = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 16, 16),)), str(static))
    assert main(["inspect", str(static), "--trust-checkpoint"]) == 2
    err = capsys.readouterr().err
    assert "dynamic batch" in err and "path/to/file.py:function" in err


def test_points_globs_from_the_command_line(capsys):
    assert main(["inspect", CUSTOM, "--arch-kwargs", "blocks=2", "--points", "body.?.conv_a,stem", "--json"]) == 0
    info = _json_out(capsys)
    assert [c["name"] for c in info["candidates"]] == ["stem", *(f"body.{i}.conv_a" for i in range(6))]
    assert [c["stage"] for c in info["candidates"]] == [1, 1, 1, 2, 2, 3, 3]


def test_pipeline_config_takes_references_relative_to_the_yaml(tmp_path):
    from compressor.pipeline.config import load_pipeline_config

    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mine.py").write_text(Path(CUSTOM.rpartition(":")[0]).read_text())
    config_file = tmp_path / "pipe.yaml"
    config_file.write_text(
        "name: mine\ndata: {train: 'synthetic:classes=4'}\n"
        "teacher: {arch: 'nets/mine.py:build', kwargs: {width: 8}}\n"
        "distill: {student: 'nets/mine.py:build', student_kwargs: {width: 4}, student_points: ['body.*']}\n"
    )
    config = load_pipeline_config(config_file)
    assert config.teacher.arch == f"{tmp_path / 'nets' / 'mine.py'}:build" and config.teacher.kwargs == {"width": 8}
    assert config.distill.student == config.teacher.arch and config.distill.student_points == ["body.*"]


def test_pipeline_with_the_users_teacher_and_student(tmp_path, capsys):
    """``compressor run``: a factory teacher trained from scratch, its points found, a factory student distilled."""
    import yaml

    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "mine.py").write_text(Path(CUSTOM.rpartition(":")[0]).read_text())
    config = {
        "name": "mine",
        "out": "runs",
        "data": {"train": "synthetic:classes=4,train=96,test=48,size=16"},
        "teacher": {"arch": "nets/mine.py:build", "kwargs": {"width": 8}, "recipe": {"epochs": 1, "batch_size": 32}},
        "hints": {"samples": 48, "k": 3},
        "distill": {"student": "nets/mine.py:build", "student_kwargs": {"width": 4}, "recipe": {"epochs": 1, "batch_size": 32}},
        "export": {"calib_samples": 32},
        "profile": {"backends": ["torch", "ort-cpu"], "batches": [1], "eval_samples": 32, "iters": 3},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "p.yaml"), "--quiet"]) == 0
    run = tmp_path / "runs" / "mine"
    plan = json.loads((run / "hints" / "plan.json").read_text())
    assert plan["candidates"] == ["body.0", "body.1", "body.2"] and plan["teacher_kwargs"] == {"width": 8, "num_classes": 4}
    student = json.loads((run / "distill" / "student.json").read_text())
    assert student["arch"] == f"{tmp_path / 'nets' / 'mine.py'}:build" and student["arch_kwargs"] == {"width": 4}
    report = json.loads((run / "profile" / "report.json").read_text())
    assert [m["role"] for m in report["models"]] == ["student", "teacher"] and report["comparison"]
