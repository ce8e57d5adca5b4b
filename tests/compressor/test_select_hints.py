import json

import pytest
import torch
from compressor.models import create_model

from compressor.cli import main
from compressor.hints import HintConfig, HintPlan, select_hints


@pytest.fixture
def teacher(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "save" / "models" / "resnet14_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 240, "model": create_model("resnet14", num_classes=4).state_dict(), "accuracy": 0.0}, path)
    return path


def test_cli_writes_plan_and_heatmap(tmp_path, teacher, capsys):
    out = tmp_path / "hints"
    rc = main(["select-hints", "--teacher", str(teacher), "--data", "synthetic:classes=4,train=96", "--samples", "80",
               "--k", "3", "--metric", "rcca", "--out", str(out), "--quiet", "--batch-size", "32"])  # fmt: skip
    assert rc == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["candidates"] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(2)]
    assert len(plan["similarity"]) == 6 and all(len(r) == 6 for r in plan["similarity"])
    assert len(plan["hints"]) == 3 and all(1 <= h <= 6 for h in plan["hints"])
    assert plan["hint_names"] == [plan["candidates"][h - 1] for h in plan["hints"]]
    assert plan["baseline_hints"] == [2, 4, 6] and plan["metric"] == "rcca" and plan["k"] == 3 and plan["samples"] == 80
    assert plan["teacher_digest"].startswith("sha256:") and plan["teacher_arch"] == "resnet14"
    assert set(plan["timings"]) == {"step1_representations_s", "step2_clustering_s"}
    png = (out / "similarity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "selected hints" in capsys.readouterr().out
    assert HintPlan.load(out / "plan.json").hints == plan["hints"]


def test_api_preact_and_positions(tmp_path, teacher):
    config = HintConfig(samples=48, k=2, metric="cka", position="last", preact=True, batch_size=16)
    plan = select_hints(teacher, "synthetic:classes=4,train=48", tmp_path / "o", config, progress=False)
    labels = plan.labels
    # "last" picks each cluster's deepest member
    assert plan.hints == sorted(max(i + 1 for i, lab in enumerate(labels) if lab == j) for j in range(2))
    assert plan.preact and plan.position == "last"


def test_preact_changes_the_representation(tmp_path, teacher):
    post = select_hints(teacher, "synthetic:train=40", tmp_path / "a", HintConfig(samples=40, k=2), progress=False)
    pre = select_hints(teacher, "synthetic:train=40", tmp_path / "b", HintConfig(samples=40, k=2, preact=True), progress=False)
    assert post.similarity != pre.similarity


def test_k_too_large_exits_2_and_writes_nothing(tmp_path, teacher, capsys):
    out = tmp_path / "hints"
    out.mkdir()
    (out / "plan.json").write_text("previous plan")
    rc = main(["select-hints", "--teacher", str(teacher), "--data", "synthetic", "--k", "7", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "k=7" in err and "k <= 6" in err
    assert (out / "plan.json").read_text() == "previous plan" and not (out / "similarity.png").exists()


def test_output_path_is_a_file(tmp_path, teacher, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    rc = main(["select-hints", "--teacher", str(teacher), "--data", "synthetic", "--out", str(blocker / "sub"), "--quiet"])
    assert rc == 2 and "cannot create output folder" in capsys.readouterr().err
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--metric", "cosine"], "unknown similarity metric 'cosine'"),
        (["--position", "first"], "position='first'"),
        (["--samples", "1"], "samples=1"),
        (["--data", "cifar10:/nonexistent"], "not a CIFAR python-pickle folder"),
    ],
)
def test_bad_settings_exit_2(tmp_path, teacher, capsys, args, message):
    base = {"--data": "synthetic", "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["select-hints", "--teacher", str(teacher), "--quiet"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_plan_load_errors(tmp_path):
    from compressor.errors import UserError

    (tmp_path / "p.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        HintPlan.load(tmp_path / "p.json")
    (tmp_path / "q.json").write_text('{"schema": "other"}')
    with pytest.raises(UserError, match="is not a hint plan"):
        HintPlan.load(tmp_path / "q.json")


def test_feature_extraction_shards_over_torchrun_ranks(tmp_path, teacher):
    """Under torchrun each rank computes every other sample; the gathered plan equals one process's."""
    import os
    import subprocess
    import sys

    args = ["select-hints", "--teacher", str(teacher), "--data", "synthetic:classes=4,train=60", "--samples", "50", "--k", "3",
            "--batch-size", "16", "--quiet"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "compressor.cli", *args,
           "--out", str(tmp_path / "two")]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = (json.loads((tmp_path / d / "plan.json").read_text()) for d in ("one", "two"))
    assert two["hints"] == one["hints"] and two["labels"] == one["labels"]
    assert torch.allclose(torch.tensor(two["similarity"]), torch.tensor(one["similarity"]), atol=1e-4)
