"""Hint points found from the graph, with the zoo's declarations as the oracle."""

import time

import pytest
import torch
from compressor.models import (
    ModelReferenceError,
    PointSpec,
    attach_points,
    baseline_hints,
    build_model,
    create_model,
    discover_points,
    forward_features,
    hint_points,
    list_models,
    model_entry,
)
from torch import nn

# Where discovery and a declaration differ on purpose, and why.
KNOWN = {
    # RepDistiller's VGG skips pool4 at 32x32, so blocks 4 and 5 share one resolution; the declaration keeps
    # RepDistiller's five conv groups as stages.
    "vgg": "stages: blocks 4 and 5 share a resolution at 32x32",
}


def _traced(name):
    entry = model_entry(name)
    detector = entry.family == "detection"
    model = create_model(name, num_classes=10, **({"input_size": (64, 64)} if detector else {}))
    return model, discover_points(model, (64, 64) if detector else entry.input_size, within="backbone" if detector else None)


@pytest.mark.parametrize("name", list_models())
def test_discovered_points_equal_declared(name):
    model, found = _traced(name)
    declared = model.point_specs()
    assert [p.name for p in found.points] == [p.name for p in declared]
    family = next((k for k in KNOWN if name.startswith(k)), None)
    if family == "vgg":
        assert [p.tap for p in found.points] == [p.tap for p in declared]
        assert [min(p.stage, 4) for p in declared] == [p.stage for p in found.points]
    else:
        assert found.points == declared
    if model_entry(name).is_classifier:
        assert found.classifier == model.classifier_name and found.output_shape == (10,)


def test_wrn_taps_follow_repdistiller_by_default():
    """RepDistiller's WRN features are the raw block outputs (discovery finds the same); the next block's BN-ReLU is an option."""
    assert all(p.tap is None for p in create_model("wrn_16_2").point_specs())
    nxt = create_model("wrn_16_2", tap="next").point_specs()
    assert [p.tap for p in nxt] == ["block1.layer.1.relu1", "block2.layer.0.relu1", "block2.layer.1.relu1", "block3.layer.0.relu1",
                                    "block3.layer.1.relu1", "relu"]  # fmt: skip
    feats, _ = create_model("wrn_16_2").eval().forward_features(torch.randn(2, 3, 32, 32), [2], preact=False)
    assert feats[2].min() < 0  # a raw residual sum, not a ReLU output


def test_vgg_stages_agree_where_every_block_is_pooled():
    """At 64x64 RepDistiller's VGG uses pool4 too; then each conv group is its own resolution."""
    found = discover_points(create_model("vgg8"), (64, 64))
    assert found.points == create_model("vgg8").point_specs()


def test_discovery_is_fast_and_leaves_no_trace():
    model = create_model("resnet110")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    start = time.perf_counter()
    discover_points(model, (32, 32))
    elapsed = time.perf_counter() - start
    assert elapsed < 5  # generous bound for a loaded CI machine; tools/bench_hints.py prints the real figure
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # eval mode: BN stats untouched


def test_custom_residual_model():
    model = build_model("tests/custom_cnn.py:build", num_classes=5, kwargs={"blocks": 2})
    assert [(p.name, p.stage, p.tap) for p in hint_points(model)] == [(f"body.{i}", i // 2 + 1, f"body.{i}.out_act") for i in range(6)]
    assert baseline_hints(model) == [2, 4, 6] and model.classifier_name == "head"
    feats, logits = forward_features(model, torch.randn(2, 3, 32, 32), indices=[1, 6], preact=True)
    assert logits.shape == (2, 5) and feats[1].shape == (2, 8, 32, 32) and feats[6].shape == (2, 32, 8, 8)
    assert feats[6].min() < 0  # pre-activation: before out_act's ReLU
    post, _ = forward_features(model, torch.randn(2, 3, 32, 32), indices=[6])
    assert post[6].min() >= 0


def test_plain_chain_and_functional_activation():
    model = build_model("tests/custom_cnn.py:plain", num_classes=3)
    assert [(p.name, p.stage, p.tap) for p in hint_points(model)] == [("0", 1, "2"), ("4", 2, "6"), ("8", 3, "9")]


def test_shared_activation_gives_no_tap():
    """torchvision's BasicBlock reuses one ReLU module twice: pre-activation cannot be hooked, so no tap."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.relu(self.conv(x)) + x)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Shared(), Shared(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    found = discover_points(model, (8, 8))
    assert found.points == [PointSpec("1", 1, None), PointSpec("2", 1, None)]
    assert any("pre-activation" in n for n in found.notes)


def test_globs_override_candidates():
    model = create_model("resnet20")
    found = attach_points(model, (32, 32), patterns=["layer*.0", "layer3.2"])
    assert [(p.name, p.stage) for p in found.points] == [("layer1.0", 1), ("layer2.0", 2), ("layer3.0", 3), ("layer3.2", 3)]
    assert [p.name for p in hint_points(model)] == ["layer1.0", "layer2.0", "layer3.0", "layer3.2"]
    assert hint_points(model)[0].tap == "layer1.0.act"


def test_no_points_is_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match="--points"):
        discover_points(model, (8, 8))
    with pytest.raises(ValueError, match="cannot trace"):
        discover_points(nn.Linear(3, 2), (8, 8))


@pytest.mark.parametrize(
    "ref, match",
    [
        ("tests/missing.py:build", "does not exist"),
        ("tests/custom_cnn.py:nope", "has no attribute 'nope'"),
        ("tests/custom_cnn.py:not_a_model", "not a torch.nn.Module"),
        ("tests/custom_cnn.py:broken", "raised RuntimeError: checkpoint folder not configured"),
        ("no_such_package_xyz.models:build", "cannot be imported"),
        ("resnet33", "unknown model"),
    ],
)
def test_bad_factory_references(ref, match):
    with pytest.raises(ModelReferenceError, match=match):
        build_model(ref)
