"""The distillation engine and its configuration."""

from .config import DistillConfig, load_distill_config
from .engine import distill
from .parts import TrainingDiverged, evaluate, learning_rate

__all__ = ["DistillConfig", "load_distill_config", "distill", "evaluate", "learning_rate", "TrainingDiverged"]
