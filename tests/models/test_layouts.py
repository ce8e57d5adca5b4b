"""State_dict layouts: RepDistiller (CIFAR) and torchvision (ImageNet)."""

import pytest
import torch
from compressor.models import create_model


def shapes(name: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in create_model(name).state_dict().items()}


@pytest.mark.parametrize("name,entries", [("resnet8x4", 62), ("resnet32x4", 206), ("resnet56", 344), ("wrn_40_2", 227), ("resnet18", 122)])
def test_entry_counts(name, entries):
    assert len(shapes(name)) == entries


@pytest.mark.parametrize(
    "name,key,shape",
    [
        ("resnet8x4", "conv1.weight", (32, 3, 3, 3)),
        ("resnet8x4", "layer1.0.conv1.weight", (64, 32, 3, 3)),
        ("resnet8x4", "layer1.0.bn2.running_var", (64,)),
        ("resnet8x4", "layer1.0.downsample.0.weight", (64, 32, 1, 1)),
        ("resnet8x4", "fc.weight", (100, 256)),
        ("ResNet50", "layer1.0.conv3.weight", (256, 64, 1, 1)),
        ("ResNet50", "layer1.0.shortcut.0.weight", (256, 64, 1, 1)),
        ("ResNet50", "linear.weight", (100, 2048)),
        ("wrn_40_2", "block1.layer.0.bn1.weight", (16,)),
        ("wrn_40_2", "block1.layer.0.conv1.weight", (32, 16, 3, 3)),
        ("wrn_40_2", "block1.layer.0.convShortcut.weight", (32, 16, 1, 1)),
        ("wrn_40_2", "bn1.weight", (128,)),
        ("wrn_40_2", "fc.weight", (100, 128)),
        ("vgg13", "block0.0.weight", (64, 3, 3, 3)),
        ("vgg13", "block0.0.bias", (64,)),
        ("vgg13", "block0.1.running_mean", (64,)),
        ("vgg13", "classifier.weight", (100, 512)),
        ("MobileNetV2", "conv1.0.weight", (16, 3, 3, 3)),
        ("MobileNetV2", "conv2.1.weight", (1280,)),
        ("MobileNetV2", "classifier.0.weight", (100, 1280)),
        ("ShuffleV1", "conv1.weight", (24, 3, 1, 1)),
        ("ShuffleV1", "layer1.0.conv3.weight", (216, 18, 1, 1)),
        ("ShuffleV1", "linear.weight", (100, 960)),
        ("ShuffleV2", "layer1.0.conv4.weight", (58, 1, 3, 3)),
        ("ShuffleV2", "linear.weight", (100, 1024)),
        ("resnet50", "layer1.0.downsample.0.weight", (256, 64, 1, 1)),
        ("resnet50", "fc.weight", (1000, 2048)),
        ("mobilenet_v2", "features.1.conv.0.0.weight", (32, 1, 3, 3)),
        ("mobilenet_v2", "features.2.conv.1.0.weight", (96, 1, 3, 3)),
        ("mobilenet_v2", "features.18.0.weight", (1280, 320, 1, 1)),
        ("mobilenet_v2", "classifier.1.weight", (1000, 1280)),
    ],
)
def test_key_shapes(name, key, shape):
    assert shapes(name)[key] == shape


def test_mobilenetv2_block_sublayers():
    keys = shapes("MobileNetV2")
    for i in (0, 1, 3, 4, 6, 7):
        assert f"blocks.0.0.conv.{i}.weight" in keys
