import compressor.models as models
import pytest
import torch
import torch.nn.functional as F
from compressor.models import create_model, list_classifiers, model_entry
from compressor.models.layers import channel_shuffle
from compressor.models.stats import count_macs, count_params

ALL = list_classifiers()


def tiny_input(name: str, batch: int = 2) -> torch.Tensor:
    size = 32 if model_entry(name).family == "cifar" else 64
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ALL)
def test_forward_and_feature_contract(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4).eval()
    x = tiny_input(name)
    points = model.hint_points()
    assert [p.index for p in points] == list(range(1, len(points) + 1))
    assert [p.stage for p in points] == sorted(p.stage for p in points)  # forward order, stage by stage
    with torch.no_grad():
        plain = model(x)
        post, logits = model.forward_features(x)
        pre, logits_pre = model.forward_features(x, preact=True)
    assert plain.shape == (2, 4)
    torch.testing.assert_close(logits, plain, rtol=0, atol=0)
    torch.testing.assert_close(logits_pre, plain, rtol=0, atol=0)
    assert list(post) == [p.index for p in points]
    for p in points:
        assert post[p.index].dim() == 4 and post[p.index].shape[0] == 2
        if p.tap is None:  # no final activation: pre and post are the block output
            assert torch.equal(pre[p.index], post[p.index])
        else:  # the tap is the sub-block's last ReLU (ReLU6 in none of the tapped families)
            torch.testing.assert_close(post[p.index], F.relu(pre[p.index]), rtol=0, atol=0)
            assert (pre[p.index] < 0).any(), f"{name} point {p.index}: pre-activation has no negative values"
    assert model.baseline_hints()[-1] == len(points)


@pytest.mark.parametrize("name", ALL)
def test_feature_subset_in_requested_order(name):
    model = create_model(name, num_classes=3).eval()
    last = len(model.hint_points())
    feats, _ = model.forward_features(tiny_input(name, 1), indices=[last, 1])
    assert list(feats) == [last, 1]
    # hooks are removed afterwards
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_indices_are_refused():
    model = create_model("resnet8", num_classes=2)
    with pytest.raises(ValueError, match="outside 1..3"):
        model.forward_features(torch.zeros(1, 3, 32, 32), indices=[0])
    with pytest.raises(ValueError, match="duplicates"):
        model.forward_features(torch.zeros(1, 3, 32, 32), indices=[2, 2])


# PURSUhInT (Keser et al.) Table 7: parameter counts at 100 (CIFAR) / 1000 (ImageNet) classes
PAPER_PARAMS = {
    "resnet110": "1.74 M",
    "resnet20": "278.32 K",
    "resnet32": "472.76 K",
    "resnet32x4": "7.43 M",
    "ShuffleV1": "949.26 K",
    "resnet8x4": "1.23 M",
    "wrn_40_2": "2.26 M",
    "wrn_16_2": "703.28 K",
    "resnet18": "11.69 M",
    "resnet34": "21.80 M",
}


@pytest.mark.parametrize("name,expected", PAPER_PARAMS.items())
def test_parameter_counts_match_the_papers(name, expected):
    from compressor.summary import human_count

    with torch.device("meta"):
        model = create_model(name)
    assert human_count(count_params(model)) == expected


def test_cifar_additions_parameter_counts():
    """The zoo additions the theses and the poster use (EKD's CIFAR ResNet-18/34; 004's ResNet-26 and WRN-10-2),
    at 100 classes: RepDistiller's resnetv2 counts (11.22 M, 21.33 M) and the 6n+2 / 6n+4 formulas' models."""
    expected = {"ResNet18": 11_220_132, "ResNet34": 21_328_292, "resnet26": 375_540, "wrn_10_2": 315_316, "MobileNetV2_1_0": 2_353_060}
    for name, n in expected.items():
        with torch.device("meta"):
            model = create_model(name)
        assert count_params(model) == n, name
    assert len(create_model("resnet26").hint_points()) == 12 and len(create_model("wrn_10_2").hint_points()) == 3
    assert create_model("ResNet18").baseline_hints() == [2, 4, 6, 8]


def test_torchvision_parameter_counts():
    # torchvision's published counts for its ImageNet models
    expected = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872}
    for name, n in expected.items():
        with torch.device("meta"):
            assert count_params(create_model(name)) == n, name


@pytest.mark.parametrize(
    "name,count,baseline",
    [
        ("resnet110", 54, [18, 36, 54]),
        ("resnet32x4", 15, [5, 10, 15]),
        ("wrn_40_2", 18, [6, 12, 18]),
        ("resnet34", 16, [3, 7, 13, 16]),
    ],
)
def test_candidates_and_baselines_match_the_papers(name, count, baseline):
    with torch.device("meta"):
        model = create_model(name)
    assert len(model.hint_points()) == count
    assert model.baseline_hints() == baseline


def test_macs_resnet18():
    with torch.device("meta"):
        model = create_model("resnet18")
    assert count_macs(model, (224, 224)) == 1_814_073_344  # 1.81 GMAC, the figure torchvision's model card gives


def test_default_class_counts():
    assert create_model("resnet8").fc.out_features == 100
    with torch.device("meta"):
        assert create_model("resnet18").fc.out_features == 1000


def test_unknown_model_lists_known_names():
    with pytest.raises(models.UnknownNameError) as e:
        create_model("resnet33")
    assert "resnet34" in str(e.value) and "known:" in str(e.value)


def test_registry_refuses_duplicates():
    reg = models.Registry("thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


def test_shufflev2_unit_equals_reference_formulation():
    """The reference applies ReLU to the branch before concat+shuffle; ours after (see shufflenet.py)."""
    torch.manual_seed(0)
    model = create_model("ShuffleV2", num_classes=3).eval()
    unit = model.layer2[1]
    x = F.relu(torch.randn(2, 232, 8, 8))  # unit inputs are previous ReLU outputs
    x1, x2 = x[:, :116], x[:, 116:]
    branch = F.relu(unit.bn1(unit.conv1(x2)))
    branch = F.relu(unit.bn3(unit.conv3(unit.bn2(unit.conv2(branch)))))
    reference = channel_shuffle(torch.cat([x1, branch], 1), 2)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), reference, rtol=0, atol=0)
