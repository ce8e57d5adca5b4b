"""The model zoo (CIFAR classifiers in RepDistiller's layout, ImageNet ones in torchvision's,
YOLOv3) and the models users bring: factory references and hint-point discovery.

Knows nothing about distillation. Every model provides the feature contract of
``compressor.models.features`` (hint points, stage-end baseline hints, features at chosen
points): zoo models by declaration, any other ``nn.Module`` through ``attach_points``.
"""

from .discover import Discovery, attach_points, discover_points, ensure_points, program_module
from .features import (
    FeatureContract,
    HintPoint,
    PointSpec,
    baseline_hints,
    check_indices,
    classifier_name,
    feature_hooks,
    forward_features,
    hint_points,
    point_specs,
)
from .registry import Registry, UnknownNameError
from .resolve import ModelReferenceError, build_model, canonical_reference, check_reference, family, is_factory, load_factory, short_name
from .zoo import MODELS, ModelEntry, create_model, list_classifiers, list_models, model_entry

__all__ = [
    "Discovery",
    "attach_points",
    "discover_points",
    "ensure_points",
    "program_module",
    "baseline_hints",
    "classifier_name",
    "feature_hooks",
    "forward_features",
    "hint_points",
    "point_specs",
    "ModelReferenceError",
    "build_model",
    "canonical_reference",
    "check_reference",
    "family",
    "short_name",
    "is_factory",
    "load_factory",
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
