"""Cross distillation from HEVC compressed-domain images to pixel images (thesis 000 ch. 5)."""

from .config import CrossConfig
from .run import match_student_points, run_cross_distill

__all__ = ["CrossConfig", "match_student_points", "run_cross_distill"]
