"""``profile_models``: every model x backend -> size, compute, latency, memory, power, accuracy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from compressor.models import MODELS, is_factory
from compressor.models.stats import count_macs, count_params
from tqdm import tqdm

from compressor.data import fit_to, open_dataset
from compressor.device import check_input_fits
from compressor.errors import UserError

from ..artifact import ModelArtifact, is_detector, load_artifact
from ..errors import BackendUnavailable
from ..runtime.base import Runtime
from .accuracy import accuracy, predict
from .analytic import analytic_memory
from .backends import BACKENDS, Exports, ProfileOptions
from .e2e import image_files, measure_e2e, write_samples
from .latency import interleaved_latency, measure_latency
from .machine import machine_info
from .memory import PeakMemory
from .tegrastats import TegrastatsSampler
from .worker import measure_memory


def profile_backend(runtime: Runtime, art: ModelArtifact, options: ProfileOptions, eval_data) -> dict[str, Any]:
    """Latency per batch size (with peak memory and, on Jetson, power), then accuracy."""
    shape = (3, *art.input_size)
    latency, memory, power = [], {}, {}
    sampler = TegrastatsSampler() if TegrastatsSampler.available() else None
    for batch in options.batches:
        with PeakMemory(runtime.device) as mem:
            if sampler is not None:
                with sampler:
                    stats = measure_latency(runtime, shape, batch, options.warmup, options.iters, options.max_seconds)
                power[str(batch)] = sampler.summary(stats["iters"] * batch)
                sampler.samples.clear()
            else:  # a warm-up and a first look; the interleaved rounds (``_interleave``) measure latency
                stats = measure_latency(runtime, shape, batch, options.warmup, min(options.iters, 5), options.max_seconds)
        latency.append(stats)
        memory[str(batch)] = mem.result
    entry: dict[str, Any] = {"status": "ok", "latency": latency, "memory": memory, "power": power or None}
    if eval_data is not None:
        logits, labels = predict(runtime, eval_data, batch_size=max(options.batches), limit=options.eval_samples)
        entry["accuracy"] = accuracy(logits, labels)
    return entry


def profile_model(art: ModelArtifact, role: str, out: Path, options: ProfileOptions, eval_data, reuse: dict[str, Path] | None = None,
                  keep: dict | None = None, e2e: list[Path] | None = None) -> dict[str, Any]:  # fmt: skip
    """One model on every backend; ``keep`` collects its runtimes (for the interleaved latency rounds);
    ``e2e`` image files add end-to-end latency (file -> answer) per backend."""
    exports = Exports(art, out / "exports" / role, options)
    exports.files.update(reuse or {})  # exports made earlier (the pipeline's export stage)
    record: dict[str, Any] = {
        "role": role,
        "name": art.name,
        "path": str(art.path),
        "arch": art.arch,
        "num_classes": art.num_classes,
        "input_size": list(art.input_size),
        "params": count_params(art.model) if art.model is not None else art.meta.get("params", art.meta.get("input", {}).get("params")),
        "macs": count_macs(art.model, art.input_size) if art.model is not None else art.meta.get("macs"),
        "file_size_bytes": {"source": art.path.stat().st_size},
        "backends": [],
    }
    for name in tqdm(options.backends, desc=f"profiling {role}", disable=None if options.progress else True, leave=False):
        backend: dict[str, Any] = {"backend": name}
        try:
            runtime = BACKENDS.get(name)(art, exports)
            backend.update(precision=runtime.precision, device=runtime.device,
                           weight_mib=None if runtime.weight_bytes is None else runtime.weight_bytes / 2**20)  # fmt: skip
            backend.update(profile_backend(runtime, art, options, eval_data))
            if e2e:
                backend["e2e"] = measure_e2e(runtime, e2e, tuple(art.input_size), art.mean, art.std, is_detector(art),
                                             min(options.warmup, 3), options.e2e_iters)  # fmt: skip
            if keep is not None:
                keep[(role, name)] = (runtime, (3, *art.input_size))
        except BackendUnavailable as e:
            backend.update(status="skipped", reason=str(e))
        if backend.get("status") == "ok" and options.memory_worker:
            _worker_memory(backend, art, name, options, exports)
        record["backends"].append(backend)
    for kind, path in exports.files.items():
        record["file_size_bytes"][kind] = path.stat().st_size
    if "onnx" in exports.files or art.model is None:  # weights and peak live activations, from the graph
        graph = exports.files.get("onnx", art.path)
        record["analytic_memory"] = {str(b): analytic_memory(graph, b) for b in options.batches}
    if "int8" in exports.info:
        record["int8_export"] = exports.info["int8"]
    return record


def _worker_memory(backend: dict[str, Any], art: ModelArtifact, name: str, options: ProfileOptions, exports: Exports) -> None:
    """Replace the profiling process's RSS by what this (model, backend) adds in a fresh process."""
    reload = {"input_size": tuple(art.input_size), "mean": tuple(art.mean), "std": tuple(art.std), "trusted": options.trusted,
              "kwargs": getattr(art.model, "arch_kwargs", None) or None,
              "arch": art.arch if art.arch and (art.arch in MODELS or is_factory(art.arch)) else None}  # fmt: skip
    try:
        measured = measure_memory(art.path, name, options.batches, min(options.warmup, 3), min(options.iters, 10), reload, exports.files,
                                  exports.folder)  # fmt: skip
    except (RuntimeError, BackendUnavailable) as e:
        backend["memory_note"] = f"measured in the profiling process (its RSS includes everything loaded before): {e}"
        return
    for batch, figures in measured.items():
        backend["memory"][batch] = {**figures, "profiling_process_rss_peak_mib": backend["memory"].get(batch, {}).get("rss_peak_mib")}


def _interleave(models: list[dict[str, Any]], runtimes: dict, options: ProfileOptions) -> list[str]:
    """Replace each configuration's latency by interleaved rounds over all (model, backend, batch); the
    first, per-backend pass (with memory and, on Jetson, power) served as warm-up. Returns warnings."""
    configs = [
        ((role, name, batch), runtime, shape, batch) for (role, name), (runtime, shape) in runtimes.items() for batch in options.batches
    ]
    if not configs:
        return []
    measured = interleaved_latency(configs, options.iters, options.rounds, max_seconds=options.max_seconds)
    warnings = []
    for m in models:
        for b in m["backends"]:
            if b.get("status") != "ok":
                continue
            b["latency"] = [measured[(m["role"], b["backend"], batch)] for batch in options.batches]
            for lat in b["latency"]:
                if lat["spread"] > options.spread_warning:
                    warnings.append(f"{m['name']} {b['backend']} batch {lat['batch']}: round medians spread {lat['spread']:.0%} (p10 "
                                    f"{lat['round_p10_ms']:.3f} to p90 {lat['round_p90_ms']:.3f} ms): unstable timing (other load, "
                                    "frequency scaling, or too few calls per round: raise iters)")  # fmt: skip
    return warnings


def compression_table(student: dict[str, Any], teacher: dict[str, Any]) -> list[dict[str, Any]]:
    """The papers' Table 7 per backend both ran: params, compression ratio 1 - P_s/P_t, latency
    per sample (batch-1 median), speed-up T/S, top-1 and its change."""
    rows = []
    t_backends = {b["backend"]: b for b in teacher["backends"] if b["status"] == "ok"}
    for s in student["backends"]:
        t = t_backends.get(s["backend"])
        if s["status"] != "ok" or t is None:
            continue
        s_lat = next(x for x in s["latency"] if x["batch"] == min(x["batch"] for x in s["latency"]))
        t_lat = next(x for x in t["latency"] if x["batch"] == s_lat["batch"])
        s_acc, t_acc = (s.get("accuracy") or {}).get("top1"), (t.get("accuracy") or {}).get("top1")
        rows.append({
            "backend": s["backend"],
            "batch": s_lat["batch"],
            "teacher": teacher["name"], "student": student["name"],
            "teacher_params": teacher["params"], "student_params": student["params"],
            "compression_ratio": 1 - student["params"] / teacher["params"],
            "teacher_latency_ms": t_lat["p50_ms"] / t_lat["batch"], "student_latency_ms": s_lat["p50_ms"] / s_lat["batch"],
            "speedup": t_lat["p50_ms"] / s_lat["p50_ms"],
            "teacher_top1": t_acc, "student_top1": s_acc,
            "top1_change": None if s_acc is None or t_acc is None else s_acc - t_acc,
        })  # fmt: skip
    return rows


def profile_models(
    model: str | Path | ModelArtifact,
    out: str | Path,
    options: ProfileOptions,
    compare: str | Path | None = None,
    arch: str | None = None,
    compare_arch: str | None = None,
    trusted: bool = False,
    student_exports: dict[str, Path] | None = None,
    source: dict[str, Any] | None = None,
    compare_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Profile a model (and optionally a teacher to compare with) and return the report dict.
    ``student_exports`` ({'onnx': path, 'int8': path}) reuses exports made before; ``source`` holds
    ``load_artifact``'s overrides for the model (``kwargs``, ``input_size``, ``mean``, ``std``)."""
    for name in options.backends:
        if name not in BACKENDS:
            raise UserError(BACKENDS.unknown_message(name))
    if not options.batches or min(options.batches) < 1:
        raise UserError(f"--batch must list positive batch sizes, got {options.batches}")
    out = Path(out)
    options = options.model_copy(update={"trusted": trusted})
    student = model if isinstance(model, ModelArtifact) else load_artifact(model, arch=arch, trusted=trusted, **(source or {}))
    teacher = load_artifact(compare, arch=compare_arch, trusted=trusted, kwargs=compare_kwargs) if compare else None
    static = {a.meta["static_batch"] for a in (student, teacher) if a is not None and "static_batch" in a.meta}
    if static:  # a graph with a fixed batch dimension runs at that batch size only
        options = options.model_copy(update={"batches": sorted(static)})
    if not options.data and student.model is not None and all("int8" in b for b in options.backends):
        raise UserError(f"--backend {','.join(options.backends)}: INT8 backends need --data to calibrate on (its train split); "
                        "give --data, or add a float backend (torch, ort-cpu)")  # fmt: skip
    for art in (a for a in (student, teacher) if a is not None):
        check_input_fits(max(options.batches), art.input_size, f"profiling {art.path}", "use smaller --batch sizes or --input-size")
    eval_data = None
    detectors = [a.name for a in (student, teacher) if a is not None and is_detector(a)]
    if options.data and detectors:
        raise UserError(f"{', '.join(detectors)}: --data measures top-1 of classifiers; a detector's AP50 / mAP is in its "
                        "compressor cross-distill report. Profile detectors without --data")  # fmt: skip
    notes = []
    if options.data:
        eval_data = open_dataset(options.data, "test")
        notes += [n for n in [fit_to(eval_data, student.input_size)] if n]  # scored at the model's own input size
        if student.num_classes and eval_data.info.num_classes != student.num_classes:
            raise UserError(f"--data {options.data} has {eval_data.info.num_classes} classes but the model {student.num_classes}")
    e2e = None
    if options.e2e:
        e2e = image_files(options.e2e)
    elif options.e2e is not None:
        if not options.data:
            raise UserError("--e2e without a PATH times PNG files of --data's test images: give --data, or --e2e IMAGE_OR_FOLDER")
        e2e = write_samples(options.data, out / "e2e_images")
    start = time.time()
    runtimes: dict = {}
    models = [profile_model(student, "student", out, options, eval_data, student_exports, runtimes, e2e)]
    if teacher is not None:
        models.append(profile_model(teacher, "teacher", out, options, eval_data, keep=runtimes, e2e=e2e))
    warnings = notes + _interleave(models, runtimes, options)
    measured = [b for m in models for b in m["backends"] if b.get("status") == "ok"]
    if not measured:
        reasons = "; ".join(f"{b['backend']}: {b['reason']}" for m in models for b in m["backends"])
        raise UserError(f"no backend could run {student.path.name} ({reasons}); choose others with --backend")
    return {
        "schema": "edge-compressor/profile-report",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - start, 2),
        "machine": machine_info(),
        "settings": {
            "backends": options.backends,
            "batches": options.batches,
            "data": options.data,
            "eval_samples": options.eval_samples,
            "warmup": options.warmup,
            "iters": options.iters,
            "e2e_images": [str(f) for f in e2e] if e2e else None,
        },  # fmt: skip
        "models": models,
        "warnings": warnings,
        "comparison": compression_table(models[0], models[1]) if teacher is not None else [],
    }
