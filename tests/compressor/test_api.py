"""The Python API: the README's snippet runs as written, and model objects go through every stage."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from compressor.models import create_model

from compressor import api
from compressor.errors import UserError
from tests.custom_cnn import build

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:classes=4,train=64,test=32,size=16"


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_runs(tmp_path):
    (tmp_path / "snippet.py").write_text(_readme_snippet())
    out = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    candidates, statuses = out.stdout.strip().splitlines()[-2:]
    assert candidates == "['blocks.0', 'blocks.2', 'blocks.4'] [1, 2, 3]"
    assert statuses == "{'torch': 'skipped', 'ort-cpu': 'ok', 'ort-cpu-int8': 'ok'}"
    side = json.loads((tmp_path / "runs/api/student/student.json").read_text())
    assert side["made_by"]["teacher_arch"] == "__main__:Net" and side["made_by"]["teacher_hints"] == [1, 2, 3]


def test_model_objects_through_distill_export_profile(tmp_path):
    teacher = create_model("resnet8", num_classes=4)
    student = build(num_classes=4)  # default width: its class rebuilds it from the sidecar's reference alone
    run = api.distill(teacher=teacher, student=student, data=DATA, method="at+kd", epochs=1, out=tmp_path / "run",
                      settings={"data.batch_size": 32})  # fmt: skip
    side = json.loads(Path(run["sidecar"]).read_text())
    assert side["arch"] == "tests.custom_cnn:TinyResNet" and side["made_by"]["teacher_arch"] == "resnet8"
    trained = build(num_classes=4)
    trained.load_state_dict(torch.load(run["weights"], weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), student.state_dict().values(), strict=True))

    files = api.export(student, tmp_path / "export", input_size=(16, 16))
    assert files["onnx"].is_file()
    report = api.profile(student, tmp_path / "profile", input_size=(16, 16), backends=["torch", "ort-cpu"], batches=[1], iters=3,
                         warmup=1)  # fmt: skip
    assert [b["status"] for b in report["models"][0]["backends"]] == ["ok", "ok"]
    assert (tmp_path / "profile" / "report.html").is_file()

    # the saved student's sidecar names its class, which is code: the file alone is not enough to rebuild it
    with pytest.raises(UserError, match="names the model 'tests.custom_cnn:TinyResNet'.*trusted=True in Python"):
        api.export(run["weights"], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    files = api.export(run["weights"], tmp_path / "named", arch="tests.custom_cnn:TinyResNet", input_size=(16, 16))
    assert json.loads(files["onnx"].with_suffix(".json").read_text())["arch"] == "tests.custom_cnn:TinyResNet"
    report = api.profile(run["weights"], tmp_path / "trusted", trusted=True, input_size=(16, 16), backends=["ort-cpu"], batches=[1],
                         iters=3, warmup=1, memory_worker=False)  # fmt: skip
    assert report["models"][0]["backends"][0]["status"] == "ok"


def test_api_refuses_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="input_size"):
        api.export(build(), tmp_path / "x")
    with pytest.raises(UserError, match="unexpected keyword"):
        api.select_hints(build(num_classes=4), DATA, tmp_path / "h", clusters=3)
