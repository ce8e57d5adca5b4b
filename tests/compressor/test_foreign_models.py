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
