"""``select_hints``: teacher checkpoint + data -> hint plan + heatmap (the whole PURSUhInT step)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import nn

from compressor.models import canonical_reference, ensure_points
from compressor.models.features import baseline_hints, hint_points, require_points, without_preact

from .. import __version__
from ..checkpoint import LoadedCheckpoint, in_memory, load_checkpoint
from ..config import Strict
from ..data import open_dataset
from ..device import check_device
from ..distributed import World, all_gather, init_world, shutdown
from ..errors import UserError
from ..outdir import claim
from .cluster import cluster_layers
from .collect import collect_representations, subset
from .kmeans import POSITIONS
from .plan import HintPlan
from .plot import plot_similarity
from .similarity import METRICS


class HintConfig(Strict):
    """Settings of hint selection, the one section for them: ``select-hints`` flags, the pipeline's
    ``hints:`` and cross distillation's ``hints:`` (which add their own keys) have these names and
    defaults."""

    samples: int = Field(10_000, ge=2)  # images whose representations are compared (the paper uses 10,000)
    k: int = Field(3, ge=1)  # clusters = hints (3 on CIFAR, 4 on ImageNet)
    metric: str = "cka"  # cka | cka-rbf | rcca
    normalize: bool = False
    position: Literal["center", "last", "medoid"] = "center"
    preact: bool = False
    batch_size: int = Field(256, ge=1)
    workers: int = Field(0, ge=0)
    seed: int = 0
    centroid: Literal["matrix", "kernel"] | None = None  # matrix (the paper's eq. 7 in representation space; default for cka, rcca)
    metric_options: dict[str, Any] = Field(default_factory=dict)

    def check(self) -> None:
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
        if self.workers < 0:
            problems.append(f"workers={self.workers} (need >= 0; 0 loads in the main process)")
        if problems:
            raise UserError("bad hint-selection settings: " + "; ".join(problems))


def select_hints(
    teacher: str | Path | nn.Module,
    data: str,
    out: str | Path,
    config: HintConfig | None = None,
    arch: str | None = None,
    trusted: bool = False,
    device: str = "cpu",
    progress: bool = True,
    kwargs: dict[str, Any] | None = None,
    points: list[str] | None = None,
    overwrite: bool = False,
) -> HintPlan:
    """Run hint selection and write ``out/plan.json`` and ``out/similarity.png``.

    Args:
        teacher: checkpoint file, or an ``nn.Module`` (its points are found if it declares none).
        data: dataset spec (its train split).
        out: output folder.
        config: the selection settings.
        arch: the checkpoint's architecture: zoo name or factory reference (inferred when None).
        trusted: allow full unpickling of a checkpoint you trust.
        device: where the teacher runs.
        progress: show a progress bar.
        kwargs: keyword arguments of ``arch``.
        points: module-name globs naming the candidates instead of the declared or found ones.
        overwrite: replace a plan already in ``out`` (default: refuse, nothing changed).

    Raises:
        UserError: bad settings, checkpoint or data; k larger than the candidates; an output
            folder that cannot be written. Nothing is written before the inputs are checked.
    """
    config = config or HintConfig()
    config.check()
    device = str(check_device(device))
    dataset = open_dataset(data, split="train")
    size = tuple(dataset.info.input_size)
    if isinstance(teacher, nn.Module):
        loaded = _in_memory(teacher, size, points)
        checkpoint = None
    else:
        loaded = load_checkpoint(teacher, arch=arch, trusted=trusted, kwargs=kwargs, points=points, input_size=size)
        checkpoint = str(Path(teacher).resolve())
    notes = list(loaded.notes)
    if dataset.info.num_classes != loaded.num_classes:
        notes.append(f"the data has {dataset.info.num_classes} classes but the teacher {loaded.num_classes}: is this its training data?")
    _check_k(loaded.model, loaded.arch, config.k)
    world = init_world(use_cuda=device.startswith("cuda"))  # under torchrun the ranks share the feature extraction
    if world.distributed and device.startswith("cuda"):
        device = f"cuda:{world.local_rank}"
    try:
        with ExitStack() as stack:
            refused = None
            if world.is_main:  # rank 0 alone claims and writes the folder; the others learn whether it could
                try:
                    folder = stack.enter_context(claim(out, ["plan.json", "similarity.png"], "select-hints", overwrite=overwrite))
                except UserError as e:
                    refused = str(e)
            refusal = all_gather(refused, world)[0]
            if refusal is not None:
                raise UserError(refusal)
            plan = build_plan(loaded.model, loaded.arch, loaded.num_classes, dataset, data, config, notes, device,
                              progress and world.is_main, checkpoint=checkpoint, digest=loaded.digest, world=world)  # fmt: skip
            plan.teacher_kwargs = dict(getattr(loaded.model, "arch_kwargs", None) or {})
            if world.is_main:
                plan.save(folder / "plan.json")
                plot_similarity(plan, folder / "similarity.png")
    finally:
        shutdown(world)
    return plan


def _in_memory(model: nn.Module, input_size: tuple[int, int], points: list[str] | None) -> LoadedCheckpoint:
    try:
        ensure_points(model, input_size, patterns=points)
    except ValueError as e:
        raise UserError(f"teacher {type(model).__name__}: {e}") from None
    return in_memory(model)


def _check_k(model: nn.Module, arch: str, k: int) -> list:
    try:
        points = require_points(model, arch)
    except ValueError as e:
        raise UserError(str(e)) from None
    if k > len(points):
        raise UserError(f"k={k} hints asked for but {arch} has only {len(points)} candidate sub-blocks; use k <= {len(points)}")
    return points


def build_plan(model, arch: str, num_classes: int, dataset, data: str, config: HintConfig, notes: list[str] | None = None,
               device: str = "cpu", progress: bool = True, checkpoint: str = "", digest: str = "",
               world: World | None = None) -> HintPlan:  # fmt: skip
    """Steps 1 and 2 on a model already in memory: representations of ``config.samples`` items
    of ``dataset`` (yielding ``(image, label, ...)``), clustering, and the plan (not yet saved).

    Raises:
        UserError: the clustering cannot run on these representations.
    """
    notes = list(notes or [])
    points = _check_k(model, arch, config.k)
    if config.preact and (missing := without_preact(model, [p.index for p in hint_points(model)])):
        notes.append(f"--preact: candidates {missing} have no pre-activation of their own (a final activation shared with other "
                     "blocks, or none); their representation is the block output")  # fmt: skip
    chosen = subset(dataset, config.samples, config.seed)
    if len(chosen) < config.samples:
        notes.append(f"the data holds only {len(chosen)} samples; used them all instead of {config.samples}")

    start = time.perf_counter()
    reps = collect_representations(
        model,
        chosen,
        preact=config.preact,
        batch_size=config.batch_size,
        workers=config.workers,
        device=device,
        progress=progress,
        world=world,
    )
    step1 = time.perf_counter() - start
    try:
        result = cluster_layers(
            reps,
            k=config.k,
            metric=config.metric,
            position=config.position,
            normalize=config.normalize,
            centroid=config.centroid,
            **config.metric_options,
        )
    except ValueError as e:
        raise UserError(f"hint selection failed on {arch}: {e}") from None

    plan = HintPlan(
        teacher_arch=canonical_reference(arch),  # a file reference made absolute, as sidecars and distill store it
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
        centroid=config.centroid or ("kernel" if config.metric == "cka-rbf" else "matrix"),
    )
    return plan
