"""Hint selection by layer clustering (PURSUhInT, seed 001 §3; thesis 000 ch. 3)."""

from .cluster import Clustering, cluster_layers
from .collect import collect_representations
from .plan import HintPlan
from .select import HintConfig, select_hints
from .similarity import METRICS, linear_cka, rbf_cka, rcca

__all__ = [
    "Clustering",
    "cluster_layers",
    "collect_representations",
    "HintPlan",
    "HintConfig",
    "select_hints",
    "METRICS",
    "linear_cka",
    "rbf_cka",
    "rcca",
]
