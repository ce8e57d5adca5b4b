"""Names are names and outputs stay in their folder: nothing is read or written outside it."""

import json

import onnx
import pytest
import torch
from compressor.models import create_model

from compressor.cli import main

DATA = "synthetic:classes=4,train=64,test=32,size=16"


def test_a_recipe_name_never_reaches_outside_the_recipe_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # compressor/pipeline/demo.yaml sits one folder above the recipes: '../demo' must not find it
    for name in ("../demo", "../../pipeline/demo"):
        assert main(["run", name, "--quiet"]) == 2
        assert f"{name} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_link_out_of_the_output_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").symlink_to(outside, target_is_directory=True)
    (out / "student.pt").write_bytes(b"old")  # an earlier run: --overwrite would replace it
    cmd = ["distill", "--student", "resnet8", "--method", "ce", "--data", DATA, "--epochs", "1", "--out", str(out), "--quiet"]
    assert main([*cmd, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoints'} is a symbolic link to {outside}" in err and "nothing was changed" in err
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"] and (out / "student.pt").read_bytes() == b"old"
    (out / "checkpoints").unlink()
    (out / "kept").mkdir()
    (out / "checkpoints").symlink_to(out / "kept", target_is_directory=True)  # a link that stays inside is the user's business
    assert main([*cmd, "--overwrite"]) == 0 and (out / "kept" / "last.pt").is_file()


@pytest.mark.parametrize("where", ["parent", "absolute", "link", "missing"])
def test_onnx_external_data_must_sit_in_the_models_folder(tmp_path, capsys, where):
    model = create_model("resnet8", num_classes=4).eval()
    folder = tmp_path / "model"
    folder.mkdir()
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(plain), dynamo=False, input_names=["x"])
    proto = onnx.load(str(plain))
    path = folder / "m.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    location = {"parent": "../m.data", "absolute": str(tmp_path / "m.data"), "link": "link.data", "missing": "gone.data"}[where]
    if where in ("parent", "absolute"):
        (folder / "m.data").rename(tmp_path / "m.data")
    elif where == "link":
        (folder / "m.data").rename(tmp_path / "m.data")
        (folder / "link.data").symlink_to(tmp_path / "m.data")
    proto = onnx.load(str(path), load_external_data=False)
    for t in proto.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(path))
    for cmd in (["export", str(path), "--int8", "--calib", DATA, "--out", str(tmp_path / "e")],
                ["profile", str(path), "--backend", "ort-cpu", "--out", str(tmp_path / "p"), "--quiet"]):  # fmt: skip
        assert main(cmd) == 2, (cmd, where)
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        assert ("does not exist" if where == "missing" else "outside the model's folder") in err, err
    assert not (tmp_path / "p").exists() and not (tmp_path / "e").exists()


def test_external_data_beside_the_model_still_loads(tmp_path):
    model = create_model("resnet8", num_classes=4).eval()
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(plain), dynamo=False, input_names=["x"])
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir()
    onnx.save(onnx.load(str(plain)), str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    cmd = ["profile", str(path), "--backend", "ort-cpu", "--batch", "1", "--iters", "2", "--out", str(tmp_path / "p"), "--quiet"]
    assert main(cmd) == 0
    assert json.loads((tmp_path / "p" / "report.json").read_text())["models"][0]["backends"][0]["status"] == "ok"
