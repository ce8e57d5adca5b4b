"""Models in the styles of code users bring (tests/foreign_models.py, written for these tests): the
zoo's declarations cannot be the oracle here, so each expectation is the architecture's own count."""

import json
from pathlib import Path

import onnx
import pytest
import torch

from compressor.cli import main

FOREIGN = Path(__file__).resolve().parents[1] / "foreign_models.py"
DATA = "synthetic:classes=4,train=64,test=32,size=32"
FAST = ["--epochs", "1", "--batch-size", "32", "--quiet"]


def ref(name: str) -> str:
    return f"{FOREIGN}:{name}"


@pytest.mark.parametrize(
    "factory, names, baseline",
    [
        ("tuple_resnet8x4", ["layer1.0", "layer2.0", "layer3.0"], [1, 2, 3]),  # every block a stage's last, each returning a tuple
        ("tuple_resnet20", [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)], [3, 6, 9]),
        ("mobile_like", ["2", "3", "6"], [2, 3]),
        ("dict_net", ["blocks.0", "blocks.1", "blocks.2"], [3]),
        ("attention_net", ["1", "2", "4"], [2, 3]),  # the residual blocks, not the attention concat inside them
        ("concat_net", ["1", "3", "4"], [1, 3]),
        ("pair_net", ["body.1", "body.3"], [1, 2]),
    ],
)
def test_discovery_on_foreign_patterns(factory, names, baseline, capsys):
    assert main(["inspect", ref(factory), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in info["candidates"]] == names
    assert info["baseline_hints"] == baseline


def test_a_tuple_block_gives_its_main_map_and_its_preact():
    """RepDistiller-style ``(out, preact)``: the post-activation features are ``out`` (read by the next
    stage), the pre-activation ones the block's own ``preact``, not ``out`` again."""
    from compressor.models import build_model, forward_features, hint_points

    model = build_model(ref("tuple_resnet8x4"), 10)
    assert [(p.output, p.preact) for p in hint_points(model)] == [(0, 1)] * 3
    x = torch.randn(2, 3, 32, 32)
    post, logits = forward_features(model.eval(), x)
    pre, _ = forward_features(model, x, preact=True)
    assert logits.shape == (2, 10)
    for i in post:
        assert post[i].dim() == 4 and (pre[i] < 0).any() and torch.equal(post[i], pre[i].relu())


def test_logits_are_taken_from_tuple_and_dict_outputs():
    from compressor.models import build_model

    x = torch.randn(3, 3, 32, 32)
    for name in ("pair_net", "dict_out_net"):
        model = build_model(ref(name), 4).eval()
        out = model(x)
        assert isinstance(out, torch.Tensor) and out.shape == (3, 4)
        assert torch.equal(out, model.fc(model.body(x).mean((2, 3))))


def test_factories_get_the_class_count_they_need(tmp_path, capsys):
    """``**kwargs`` and a required positional ``num_classes``: the checkpoint's count when there is one,
    else a fallback that only sizes the classifier (inspect alone)."""
    import sys

    sys.path.insert(0, str(FOREIGN.parent))
    import foreign_models

    torch.save(foreign_models.mobile_like(7).state_dict(), tmp_path / "m.pth")
    torch.save(foreign_models.tuple_resnet8x4(num_classes=5).state_dict(), tmp_path / "t.pth")
    assert main(["inspect", str(tmp_path / "m.pth"), "--arch", ref("mobile_like"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 7
    assert main(["inspect", str(tmp_path / "t.pth"), "--arch", ref("tuple_resnet8x4"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 5
    assert main(["inspect", ref("tuple_resnet8x4"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_classes"] == 100


def test_a_factory_that_cannot_be_called_names_its_arguments_and_the_flag(capsys):
    assert main(["inspect", ref("tuple_resnet8x4"), "--arch-kwargs", "widths=3"]) == 2
    err = capsys.readouterr().err
    assert "TypeError" in err and "it takes (**kwargs)" in err and "--arch-kwargs" in err


def test_foreign_models_through_select_hints_distill_and_export(tmp_path, capsys, monkeypatch):
    """A tuple-block teacher (relative file reference, as a user types it) -> plan -> a (logits, features)
    student; a dict-output teacher -> a tuple-block student with pre-activation hints; a student whose
    factory needs num_classes positionally; the (logits, features) student exported with logits as its output."""
    import sys

    sys.path.insert(0, str(FOREIGN.parent))
    import foreign_models

    monkeypatch.chdir(FOREIGN.parent)
    torch.save(foreign_models.tuple_resnet20(num_classes=4).state_dict(), tmp_path / "t20.pth")
    torch.save(foreign_models.dict_out_net(num_classes=4).state_dict(), tmp_path / "dict.pth")
    assert main(["select-hints", "--teacher", str(tmp_path / "t20.pth"), "--arch", "foreign_models.py:tuple_resnet20", "--data", DATA,
                 "--samples", "32", "--k", "2", "--out", str(tmp_path / "hints"), "--quiet"]) == 0  # fmt: skip
    plan = json.loads((tmp_path / "hints" / "plan.json").read_text())
    assert plan["teacher_arch"] == ref("tuple_resnet20")  # stored absolute, as distill and sidecars store it
    assert main(["distill", "--teacher", str(tmp_path / "t20.pth"), "--arch", "foreign_models.py:tuple_resnet20", "--student",
                 ref("pair_net"), "--method", "at+kd", "--hints", str(tmp_path / "hints" / "plan.json"), "--data", DATA,
                 "--out", str(tmp_path / "d1"), *FAST]) == 0  # fmt: skip
    assert main(["distill", "--teacher", str(tmp_path / "dict.pth"), "--arch", ref("dict_out_net"), "--student", ref("tuple_resnet8x4"),
                 "--method", "fitnet+kd", "--set", "hints.preact=true", "--set", "hints.student=[2,3]", "--data", DATA,
                 "--out", str(tmp_path / "d2"), *FAST]) == 0  # fmt: skip
    assert main(["distill", "--teacher", str(tmp_path / "dict.pth"), "--arch", ref("dict_out_net"), "--student", ref("mobile_like"),
                 "--method", "kd", "--data", DATA, "--out", str(tmp_path / "d3"), *FAST]) == 0  # fmt: skip
    assert json.loads((tmp_path / "d3" / "student.json").read_text())["num_classes"] == 4
    capsys.readouterr()
    assert main(["export", str(tmp_path / "d1" / "student.pt"), "--arch", ref("pair_net"), "--out", str(tmp_path / "e1")]) == 0
    graph = onnx.load(str(tmp_path / "e1" / "student.onnx")).graph
    assert len(graph.output) == 1 and [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [4]
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "e1" / "student.onnx"), "--json"]) == 0  # the exported graph, checked and counted
    info = json.loads(capsys.readouterr().out)
    from compressor.models.stats import count_macs

    assert info["macs"] == count_macs(foreign_models.pair_net(4), (32, 32)) and info["outputs"] == ["logits"]
    assert info["ops"]["Concat"] == 2 and info["opsets"] == {"ai.onnx": 17} and info["num_classes"] == 4


def test_a_model_that_runs_at_one_size_only_is_traced_at_the_datas(tmp_path):
    """Teacher and student that only run at 64 x 64: every stage takes the size from the data, not 32 x 32."""
    import sys

    sys.path.insert(0, str(FOREIGN.parent))
    import foreign_models

    torch.save(foreign_models.fixed64_net(4).state_dict(), tmp_path / "t.pth")
    data = "synthetic:classes=4,train=32,test=16,size=64"
    assert main(["select-hints", "--teacher", str(tmp_path / "t.pth"), "--arch", ref("fixed64_net"), "--data", data, "--samples", "16",
                 "--k", "2", "--out", str(tmp_path / "h"), "--quiet"]) == 0  # fmt: skip
    assert main(["distill", "--teacher", str(tmp_path / "t.pth"), "--arch", ref("fixed64_net"), "--student", ref("fixed64_net"),
                 "--method", "at+kd", "--hints", str(tmp_path / "h" / "plan.json"), "--data", data, "--out", str(tmp_path / "d"),
                 *FAST]) == 0  # fmt: skip
    assert json.loads((tmp_path / "d" / "student.json").read_text())["input_size"] == [64, 64]
    assert main(["export", str(tmp_path / "d" / "student.pt"), "--arch", ref("fixed64_net"), "--out", str(tmp_path / "e")]) == 0


def test_onnx_files_with_a_fixed_batch_or_size_are_profiled_and_quantized(tmp_path, capsys):
    """A graph fixed at batch 1, and one fixed at 64 x 64 fed 32 x 32 data: evaluation runs the fixed
    batch in chunks, calibration uses it, and the data are resized to the graph's input (said so)."""
    from compressor.models import create_model

    torch.save(create_model("resnet8", num_classes=4).state_dict(), tmp_path / "r8.pth")
    data = "synthetic:classes=4,train=48,test=24,size=32"
    assert main(["export", str(tmp_path / "r8.pth"), "--no-dynamic-batch", "--out", str(tmp_path / "b1")]) == 0
    assert main(["export", str(tmp_path / "r8.pth"), "--no-dynamic-batch", "--input-size", "64", "64", "--out", str(tmp_path / "s64")]) == 0
    for folder in ("b1", "s64"):
        onnx_file = tmp_path / folder / "model.onnx"
        assert main(["profile", str(onnx_file), "--data", data, "--batch", "1", "--iters", "3", "--warmup", "1", "--eval-samples", "24",
                     "--out", str(tmp_path / f"p-{folder}"), "--quiet"]) == 0  # fmt: skip
        report = json.loads((tmp_path / f"p-{folder}" / "report.json").read_text())
        measured = {b["backend"]: b for b in report["models"][0]["backends"]}
        assert measured["ort-cpu"]["accuracy"]["samples"] == 24 and measured["ort-cpu-int8"]["status"] == "ok"
        assert any("resized from 32x32" in w for w in report["warnings"]) == (folder == "s64")
        assert main(["export", str(onnx_file), "--int8", "--calib", data, "--out", str(tmp_path / f"q-{folder}")]) == 0
        sidecar = json.loads(next((tmp_path / f"q-{folder}").glob("*.int8.json")).read_text())
        assert ("resized" in sidecar["int8"]["calibration"]) == (folder == "s64")


def test_profile_with_default_backends_and_no_data_runs_the_float_ones(tmp_path, capsys):
    from compressor.models import create_model

    torch.save(create_model("resnet8", num_classes=4).state_dict(), tmp_path / "r8.pth")
    argv = ["profile", str(tmp_path / "r8.pth"), "--batch", "1", "--iters", "3", "--warmup", "1", "--quiet"]
    assert main([*argv, "--backend", "ort-cpu-int8", "--out", str(tmp_path / "only-int8")]) == 2
    assert "INT8 backends need --data" in capsys.readouterr().err and not (tmp_path / "only-int8").exists()  # refused before any work
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    status = {b["backend"]: b["status"] for b in json.loads((tmp_path / "p" / "report.json").read_text())["models"][0]["backends"]}
    assert status["torch"] == "ok" and status["ort-cpu"] == "ok" and status["ort-cpu-int8"] != "ok"


def test_a_pickled_model_whose_module_is_missing_says_which(tmp_path, capsys):
    import subprocess
    import sys

    code = tmp_path / "code"
    code.mkdir()
    (code / "mynet.py").write_text("import torch\nclass Net(torch.nn.Sequential):\n    def __init__(self):\n"
                                   "        super().__init__(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", f"import sys, torch; sys.path.insert(0, {str(code)!r}); import mynet; "
                    f"torch.save(mynet.Net(), {str(tmp_path / 'whole.pt')!r})"], check=True)  # fmt: skip
    assert main(["inspect", str(tmp_path / "whole.pt"), "--trust-checkpoint"]) == 2
    err = capsys.readouterr().err
    assert "module 'mynet'" in err and "--arch" in err


def test_stage_counts_that_differ_pair_by_depth_and_missing_preacts_are_said(tmp_path, capsys):
    """A 2-stage teacher and a 3-stage student: the student points are taken stage by stage at the same
    relative depth (not an error); preact asked where the teacher's blocks have none is said, not silent."""
    import sys

    sys.path.insert(0, str(FOREIGN.parent))
    import foreign_models

    torch.save(foreign_models.mobile_like(4).state_dict(), tmp_path / "m.pth")
    assert main(["distill", "--teacher", str(tmp_path / "m.pth"), "--arch", ref("mobile_like"), "--student", ref("tuple_resnet8x4"),
                 "--method", "fitnet+kd", "--set", "hints.preact=true", "--data", DATA, "--out", str(tmp_path / "d"), "--epochs", "1",
                 "--batch-size", "32"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "stage ends [1, 2, 3] do not pair with 2 teacher hints [2, 3]; student points [1, 2]" in err
    assert "hints.preact: teacher points [2, 3] have no pre-activation" in err and "student points [1, 2] have no" not in err


def test_a_model_hubs_shorthand_and_its_models_name(tmp_path, monkeypatch):
    """``hub:name`` for a module with ``create_model`` (timm:resnet18), and the hub model's name kept in labels."""
    from compressor.models import build_model
    from compressor.models.resolve import short_name

    (tmp_path / "fakehub.py").write_text(
        "import torch\n"
        "def create_model(model_name, num_classes=1000, **kw):\n"
        "    assert model_name == 'tiny', model_name\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),"
        " torch.nn.Linear(4, num_classes))\n"
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("fakehub:tiny", 6)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 6) and model.arch == "fakehub:tiny"
    assert short_name("fakehub:tiny") == "fakehub.tiny" and short_name("timm:create_model", {"model_name": "resnet18"}) == "timm.resnet18"


def test_a_vision_transformer_has_its_token_blocks_as_points_read_as_maps(tmp_path):
    """Residual adds of (B, N, D) tokens make the blocks the candidates (globs too: not the 4-D tensors
    inside attention); a block's patch tokens are read as a (B, D, s, s) map, the class token dropped."""
    from compressor.models import build_model, forward_features, hint_points

    model = build_model(ref("tiny_vit"), 4).eval()
    assert [(p.name, p.stage, p.tokens) for p in hint_points(model)] == [("blocks.0", 1, 1), ("blocks.1", 1, 1), ("blocks.2", 1, 1)]
    assert [p.name for p in hint_points(build_model(ref("tiny_vit"), 4, points=["blocks.*"]))] == ["blocks.0", "blocks.1", "blocks.2"]
    x = torch.randn(2, 3, 32, 32)
    tokens = {}
    handle = model.blocks[1].register_forward_hook(lambda m, i, o: tokens.setdefault("b1", o))
    feats, _ = forward_features(model, x, [2])
    handle.remove()
    assert feats[2].shape == (2, 32, 4, 4)
    # patch (row 1, column 2) is token 1 + 1 * 4 + 2 after the class token
    assert torch.equal(feats[2][:, :, 1, 2], tokens["b1"][:, 1 + 4 + 2])


def test_a_transformer_and_a_pointless_model_distill_and_export(tmp_path, capsys):
    """A ViT teacher with hint methods, an MLP student with logit methods (a hint method on it is a message)."""
    import sys

    sys.path.insert(0, str(FOREIGN.parent))
    import foreign_models

    torch.save(foreign_models.tiny_vit(4).state_dict(), tmp_path / "vit.pth")
    teacher = ["--teacher", str(tmp_path / "vit.pth"), "--arch", ref("tiny_vit"), "--data", DATA]
    assert main(["distill", *teacher, "--student", "resnet8", "--method", "at+kd", "--set", "hints.student=[3]",
                 "--out", str(tmp_path / "a"), *FAST]) == 0  # fmt: skip
    assert main(["distill", *teacher, "--student", ref("mlp_net"), "--method", "kd", "--out", str(tmp_path / "b"), *FAST]) == 0
    assert main(["distill", *teacher, "--student", ref("mlp_net"), "--method", "at+kd", "--out", str(tmp_path / "c"), *FAST]) == 2
    assert "the student has no hint points" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["export", str(tmp_path / "vit.pth"), "--arch", ref("tiny_vit"), "--out", str(tmp_path / "e")]) == 0
