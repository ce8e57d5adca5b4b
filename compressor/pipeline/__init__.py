"""The whole pipeline from one YAML: teacher -> hints -> distill -> export -> profile."""

from pathlib import Path

from .config import PipelineConfig, load_pipeline_config
from .run import STAGES, run_pipeline

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
RECIPES = Path(__file__).with_name("recipes")  # the papers' tables as table recipes (``table.py``)

__all__ = ["PipelineConfig", "load_pipeline_config", "run_pipeline", "STAGES", "DEMO_CONFIG", "RECIPES"]
