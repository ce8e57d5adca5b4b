"""``select_hints``: teacher checkpoint + data -> hint plan + heatmap (the whole PURSUhInT step)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.models.features import baseline_hints, hint_points

from .. import __version__
from ..checkpoint import load_checkpoint
from ..data import open_dataset
from ..errors import UserError
from .cluster import cluster_layers
from .collect import collect_representations, subset
from .kmeans import POSITIONS
from .plan import HintPlan
from .plot import plot_similarity
from .similarity import METRICS


@dataclass
class HintConfig:
    """Settings of hint selection; the CLI flags and the YAML keys have these names."""

    samples: int = 10_000
    k: int = 3
    metric: str = "cka"
    normalize: bool = False
    position: str = "center"
    preact: bool = False
    batch_size: int = 256
    workers: int = 0
    seed: int = 0
    metric_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        problems = []
        if self.samples < 2:
            problems.append(f"samples={self.samples} (need >= 2; the paper uses 10000)")
        if self.k < 1:
            problems.append(f"k={self.k} (need >= 1)")
        if self.metric not in METRICS:
            problems.append(METRICS.unknown_message(self.metric))
        if self.position not in POSITIONS:
            problems.append(f"position={self.position!r} (known: {', '.join(POSITIONS)})")
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size} (need >= 1)")
        if problems:
            raise UserError("bad hint-selection settings: " + "; ".join(problems))


def select_hints(
    teacher: str | Path,
    data: str,
    out: str | Path,
    config: HintConfig | None = None,
    arch: str | None = None,
    trusted: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> HintPlan:
    """Run hint selection and write ``out/plan.json`` and ``out/similarity.png``.

    Raises:
        UserError: bad settings, checkpoint or data; k larger than the candidates; an output
            folder that cannot be written. Nothing is written before the inputs are checked.
    """
    config = config or HintConfig()
    config.validate()
    out = _writable_dir(out)
    loaded = load_checkpoint(teacher, arch=arch, trusted=trusted)
    model = loaded.model
    dataset = open_dataset(data, split="train")
    notes = list(loaded.notes)
    if dataset.info.num_classes != loaded.num_classes:
        notes.append(f"the data has {dataset.info.num_classes} classes but the teacher {loaded.num_classes}: is this its training data?")
    plan = build_plan(model, loaded.arch, loaded.num_classes, dataset, data, config, notes, device, progress,
                      checkpoint=str(Path(teacher).resolve()), digest=loaded.digest)  # fmt: skip
    plan.save(out / "plan.json")
    plot_similarity(plan, out / "similarity.png")
    return plan


def build_plan(model, arch: str, num_classes: int, dataset, data: str, config: HintConfig, notes: list[str] | None = None,
               device: str = "cpu", progress: bool = True, checkpoint: str = "", digest: str = "") -> HintPlan:  # fmt: skip
    """Steps 1 and 2 on a model already in memory: representations of ``config.samples`` items
    of ``dataset`` (yielding ``(image, label, ...)``), clustering, and the plan (not yet saved).

    Raises:
        UserError: the clustering cannot run on these representations.
    """
    notes = list(notes or [])
    points = hint_points(model)
    if config.k > len(points):
        raise UserError(f"k={config.k} hints asked for but {arch} has only {len(points)} candidate sub-blocks; use k <= {len(points)}")
    chosen = subset(dataset, config.samples, config.seed)
    if len(chosen) < config.samples:
        notes.append(f"the data holds only {len(chosen)} samples; used them all instead of {config.samples}")

    start = time.perf_counter()
    reps = collect_representations(
        model, chosen, preact=config.preact, batch_size=config.batch_size, workers=config.workers, device=device, progress=progress
    )
    step1 = time.perf_counter() - start
    try:
        result = cluster_layers(
            reps, k=config.k, metric=config.metric, position=config.position, normalize=config.normalize, **config.metric_options
        )
    except ValueError as e:
        raise UserError(f"hint selection failed on {arch}: {e}") from None

    plan = HintPlan(
        teacher_arch=arch,
        teacher_checkpoint=checkpoint,
        teacher_digest=digest,
        num_classes=num_classes,
        data=data,
        metric=config.metric,
        normalize=config.normalize,
        k=config.k,
        samples=len(chosen),
        position=config.position,
        preact=config.preact,
        candidates=[p.name for p in points],
        candidate_stages=[p.stage for p in points],
        similarity=[[round(float(v), 6) for v in row] for row in result.similarity],
        labels=[int(v) for v in result.labels],
        hints=[int(h) for h in result.hints],
        hint_names=[points[h - 1].name for h in result.hints],
        baseline_hints=baseline_hints(model),
        seeds=result.seeds,
        iterations=result.iterations,
        timings={"step1_representations_s": round(step1, 3), "step2_clustering_s": round(result.seconds, 3)},
        notes=notes + result.notes,
        tool_version=__version__,
    )
    return plan


def _writable_dir(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output folder {path}: {e.strerror}; choose another --out") from None
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise UserError(f"output folder {path} is not writable; choose another --out")
    return path
