"""The model zoo: CIFAR classifiers in RepDistiller's layout, ImageNet ones in torchvision's.

Knows nothing about distillation. Every model provides the feature contract of
``models.features`` (hint points, stage-end baseline hints, features at chosen points).
"""

from .features import FeatureContract, HintPoint, PointSpec, check_indices
from .registry import Registry, UnknownNameError
from .zoo import MODELS, ModelEntry, create_model, list_classifiers, list_models, model_entry

__all__ = [
    "FeatureContract",
    "HintPoint",
    "PointSpec",
    "check_indices",
    "Registry",
    "UnknownNameError",
    "MODELS",
    "ModelEntry",
    "create_model",
    "list_models",
    "list_classifiers",
    "model_entry",
]
