"""``compressor report RUN_DIR``: one self-contained ``report.html`` (+ ``report.md``) for a run.

The report only reads what the stages left in the run folder (the layout of ``compressor run``
and ``compressor demo``, or of ``compressor cross-distill``): sidecars, the hint plan,
metrics.jsonl, export sidecars and the profile's report.json. It tells the run in the order a
reader asks: the summary, the teacher, the hint plan, the training curves, the results, export
parity and INT8 agreement, the profiling tables and plots, and where everything came from.
Every section is always present; a stage the run did not have says so in its section.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .errors import UserError
from .evidence import better_than_distilled
from .io import atomic_write, atomic_write_text
from .summary import human_count
from .train.artifacts import read_metrics

SECTIONS = {
    "summary": "Summary",
    "teacher": "Teacher",
    "hints": "Hint plan",
    "training": "Training curves",
    "results": "Results",
    "export": "Export: parity and INT8 agreement",
    "profile": "Profiling",
    "provenance": "Provenance",
}
GENERATOR = "edge-compressor run report"  # marks a report.html as ours, so regenerating it never replaces a user's file
BACKEND_NAMES = {"torch": "PyTorch", "torch-compile": "torch.compile", "torch-cuda": "PyTorch CUDA", "torch-cuda-fp16": "PyTorch CUDA FP16",
                 "ort-cpu": "ONNX Runtime CPU", "ort-cpu-int8": "ONNX Runtime CPU INT8", "ort-cuda": "ONNX Runtime CUDA",
                 "ort-tensorrt": "ONNX Runtime TensorRT", "tensorrt-fp16": "TensorRT FP16", "tensorrt-int8": "TensorRT INT8"}  # fmt: skip
NOT_TERMS = {"images_per_s", "seconds", "model", "epoch", "stage", "lr", "weights"}

Table = tuple[str, list[str], list[list[str]]]  # (title or "", header, rows)


@dataclass
class Section:
    """One part of the report: paragraphs, tables, images (name -> PNG path) and preformatted text."""

    key: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)
    pre: str | None = None

    @property
    def title(self) -> str:
        return SECTIONS[self.key]


@dataclass
class RunFiles:
    """What a run folder holds, read once."""

    root: Path
    config: str | None = None
    teacher: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    students: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> sidecar
    metrics: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # network -> epoch rows
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)  # file name -> sidecar
    profile: dict[str, Any] | None = None
    cross: dict[str, Any] | None = None  # cross distillation's report.json
    seeds: dict[str, Any] | None = None  # distill/seeds.json: the student trained once per seed
    compare: dict[str, Any] | None = None  # compare/compare.json: vanilla and baseline-hints beside the student
    folders: dict[str, Path] = field(default_factory=dict)  # where the plan and the profile live
    budget_ms: float | None = None  # the recommendation's latency budget (batch 1)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_run(root: str | Path) -> RunFiles:
    """Read a pipeline run folder (teacher/ hints/ distill/ export/ profile/) or a cross-distill one."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; give the run folder of compressor run, demo or cross-distill (e.g. runs/demo)")
    run = RunFiles(root)
    if (root / "config.yaml").exists():
        run.config = (root / "config.yaml").read_text()
    cross = _json(root / "report.json")
    if cross is not None and "results" in cross:  # cross distillation keeps its files at the top of its folder
        run.cross = cross
        run.teacher = _json(root / "teacher.json")
        run.students = {n: s for n in ("vanilla_student", "baseline_student", "cross_student") if (s := _json(root / f"{n}.json"))}
        for row in read_metrics(root / "metrics.jsonl"):
            run.metrics.setdefault(row.get("model", "student"), []).append(row)
    else:
        run.teacher = _json(root / "teacher" / "teacher.json")
        run.metrics["teacher"] = read_metrics(root / "teacher" / "metrics.jsonl")
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            side = _json(folder / "student.json")
            if side and side.get("schema") == "edge-compressor/student":  # export/student.json is the exported model's
                run.students[folder.name] = side
                run.metrics["student" if folder.name == "distill" else f"student ({folder.name})"] = read_metrics(folder / "metrics.jsonl")
        for folder in sorted(p for p in (root / "compare").glob("*") if p.is_dir()):  # the same student alone / with stage-end hints
            if (side := _json(folder / "student.json")) and side.get("schema") == "edge-compressor/student":
                run.students[folder.name] = side
                run.metrics[f"student ({folder.name})"] = read_metrics(folder / "metrics.jsonl")
        run.compare = _json(root / "compare" / "compare.json")
        run.profile = _json(root / "profile" / "report.json")
        run.seeds = _json(root / "distill" / "seeds.json")
        run.folders["profile"] = root / "profile"
    run.exports = {p.name: s for p in sorted((root / "export").glob("*.json")) if (s := _json(p)) and "precision" in s}  # both kinds
    run.plan = _json(root / "hints" / "plan.json")
    run.folders["hints"] = root / "hints"
    run.metrics = {k: v for k, v in run.metrics.items() if v}
    if not any((run.teacher, run.students, run.plan, run.profile, run.exports)):
        raise UserError(f"{root} holds no run: expected teacher/, hints/, distill/, export/ or profile/ (compressor run, demo) "
                        "or the files of compressor cross-distill")  # fmt: skip
    return run


# ---------------------------------------------------------------- sections


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _int8_scores(q: dict[str, Any]) -> tuple[str, float | None, float | None, float | None]:
    """(metric, fp32, INT8, agreement) of an INT8 file's sidecar: top-1, or a detector's AP50 (its
    agreement: AP50 against the fp32 model's detections)."""
    if "fp32_AP50" in q:
        return "AP50", q["fp32_AP50"], q.get("int8_AP50"), q.get("detection_agreement")
    return "top-1", q.get("fp32_top1"), q.get("int8_top1"), q.get("top1_agreement")


def _top1(sidecar: dict[str, Any] | None) -> float | None:
    return ((sidecar or {}).get("metrics") or {}).get("final", {}).get("top1")


def _latency(backend: dict[str, Any], batch: int) -> dict[str, Any] | None:
    return next((lat for lat in backend.get("latency") or [] if lat["batch"] == batch), None)


def _spread_limit(profile: dict[str, Any]) -> float:
    return float(profile.get("settings", {}).get("spread_warning", 0.25))


def speed_lines(profile: dict[str, Any]) -> list[str]:
    """Student vs teacher per backend at its smallest batch; a pair whose round medians spread more
    than the profile's warning threshold is said to be unreliable, never given as a speed-up."""
    models = {m["name"]: {b["backend"]: b for b in m["backends"]} for m in profile.get("models", [])}
    limit, lines, by_backend = _spread_limit(profile), [], {}
    for row in profile.get("comparison") or []:
        if row["backend"] not in by_backend or row["batch"] < by_backend[row["backend"]]["batch"]:
            by_backend[row["backend"]] = row
    for backend, r in by_backend.items():
        where = f"{BACKEND_NAMES.get(backend, backend)} (batch {r['batch']})"
        spreads = [lat["spread"] for name in (r["student"], r["teacher"])
                   if (lat := _latency(models.get(name, {}).get(backend, {}), r["batch"]))]  # fmt: skip
        top1 = f", top-1 {_fmt(r['teacher_top1'], 1)} -> {_fmt(r['student_top1'], 1)}" if r.get("student_top1") is not None else ""
        size = f"{100 * r['compression_ratio']:.0f}% fewer parameters"
        if any(sp > limit for sp in spreads):
            lines.append(f"{r['student']} vs {r['teacher']} on {where}: latency unreliable (round medians spread "
                         f"{', '.join(f'{sp:.0%}' for sp in spreads)}, above {limit:.0%}: timing was unstable), so no speed-up is "
                         f"claimed; {size}{top1}")  # fmt: skip
            continue
        pace = f"{r['speedup']:.1f}x faster" if r["speedup"] >= 1 else f"{1 / r['speedup']:.1f}x slower"
        lines.append(f"{r['student']} student: {pace} than {r['teacher']} on {where}, {size}{top1}")
    return lines


def evidence_lines(run: RunFiles) -> list[str]:
    """(a) distillation vs the same student alone, (b) the chosen hints vs the stage ends."""
    from .evidence import describe_difference

    comp = (run.compare or {}).get("comparisons") or {}
    lines = []
    if run.cross:  # one run of each network: a difference without an interval (cross-distill --seeds gives seeds.md)
        metric, res = run.cross["metric"], run.cross["results"]
        cross = res.get("cross_student", {}).get(metric)
        ends = (run.cross.get("baseline_points") or {}).get("teacher")
        for name, what in (("vanilla_student", "over the same student trained alone"),
                           ("baseline_student", f"over the teacher's stage-end hints {ends}")):  # fmt: skip
            if cross is not None and res.get(name, {}).get(metric) is not None:
                lines.append(f"Cross distillation: {cross - res[name][metric]:+.1f} {metric} {what} (one seed: no interval; "
                             "cross-distill --seeds for one)")  # fmt: skip
    for name, what in (("vanilla", "over the same student trained alone (CE only, same initial weights, seed and recipe)"),
                       ("baseline-hints", "for the chosen hints over the teacher's stage-end hints")):  # fmt: skip
        entry = comp.get(name)
        if entry is None:
            continue
        method = run.compare["method"]
        if not entry["trained"]:
            lines.append(f"Chosen vs stage-end hints: not trained, {entry['reason']}.")
            continue
        lines.append(f"{method} distillation: {describe_difference(entry['distill_minus_this'])} {what}.")
    return lines


def _artifact_file(run: RunFiles, model: dict[str, Any], backend: dict[str, Any]) -> str:
    """The file a backend ran: the checkpoint for PyTorch, else the ONNX file exported for it."""
    if backend["backend"].startswith("torch"):
        path = Path(model["path"])
    else:
        stem = "student" if model["role"] == "student" else model["name"]
        folder = run.root / "export" if model["role"] == "student" else run.folders["profile"] / "exports" / model["role"]
        path = folder / f"{stem}{'.int8' if backend['precision'] == 'int8' else ''}.onnx"
        if not path.exists():
            found = sorted(folder.glob(f"*{'.int8' if backend['precision'] == 'int8' else ''}.onnx"))
            found = [f for f in found if backend["precision"] == "int8" or ".int8" not in f.name]
            path = found[0] if found else path
    try:
        return path.resolve().relative_to(run.root.resolve()).as_posix()
    except ValueError:
        return str(path)


def candidates(run: RunFiles) -> list[dict[str, Any]]:
    """Every profiled (model, backend) at batch 1 with its accuracy: what could be deployed."""
    profile, out = run.profile or {}, []
    limit = _spread_limit(profile)
    agreement = {}
    for name, side in run.exports.items():
        if (side.get("int8") or {}).get("top1_agreement") is not None:
            agreement[name.removesuffix(".json")] = side["int8"]["top1_agreement"]
    for m in profile.get("models", []):
        for b in m["backends"]:
            lat = _latency(b, 1) or (b.get("latency") or [None])[0]
            top1 = (b.get("accuracy") or {}).get("top1")
            if b.get("status") != "ok" or lat is None or top1 is None:
                continue
            file = _artifact_file(run, m, b)
            out.append({"model": m["name"], "role": m["role"], "backend": b["backend"], "precision": b["precision"], "file": file,
                        "batch": lat["batch"], "latency_ms": lat["round_median_ms"], "reliable": lat["spread"] <= limit,
                        "spread": lat["spread"], "top1": top1,
                        "agreement": agreement.get(Path(file).stem) if b["precision"] == "int8" else None})  # fmt: skip
    return out


def pareto(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates no other beats on both latency and top-1 (one of them strictly), fastest first."""
    keep = [c for c in cands if not any(o["latency_ms"] <= c["latency_ms"] and o["top1"] >= c["top1"]
                                        and (o["latency_ms"] < c["latency_ms"] or o["top1"] > c["top1"]) for o in cands)]  # fmt: skip
    return sorted(keep, key=lambda c: c["latency_ms"])


def recommend(cands: list[dict[str, Any]], budget_ms: float | None, tolerance: float = 1.0) -> dict[str, Any] | None:
    """With a budget: the most accurate candidate within it (the faster on a tie). Without: the
    fastest candidate of the Pareto set whose top-1 is within ``tolerance`` points of the best."""
    if not cands:
        return None
    if budget_ms is not None:
        within = [c for c in cands if c["latency_ms"] <= budget_ms]
        return max(within, key=lambda c: (c["top1"], -c["latency_ms"])) if within else None
    best = max(c["top1"] for c in cands)
    return min((c for c in pareto(cands) if c["top1"] >= best - tolerance), key=lambda c: c["latency_ms"])


def _describe(c: dict[str, Any]) -> str:
    agree = f", {c['agreement']:.1f}% of answers equal to fp32" if c.get("agreement") is not None else ""
    shaky = f" (latency unreliable: round medians spread {c['spread']:.0%})" if not c["reliable"] else ""
    return (f"{c['file']} ({c['model']}, {BACKEND_NAMES.get(c['backend'], c['backend'])}): {c['latency_ms']:.3f} ms at batch "
            f"{c['batch']}{shaky}, top-1 {c['top1']:.1f}%{agree}")  # fmt: skip


def recommendation_lines(run: RunFiles, budget_ms: float | None) -> list[str]:
    cands = candidates(run)
    if not cands:
        return []
    pick = recommend(cands, budget_ms)
    if pick is None:
        fastest = min(cands, key=lambda c: c["latency_ms"])
        return [f"Recommendation: nothing profiled meets the {budget_ms} ms budget; the fastest is {_describe(fastest)}."]
    rule = (f"the most accurate within the {budget_ms} ms budget" if budget_ms is not None
            else "the fastest within 1 point of the best top-1; report.budget_ms sets a latency budget")  # fmt: skip
    lines = [f"Recommendation: deploy {_describe(pick)} ({rule})."]
    winner = better_than_distilled(run.compare)
    if winner is not None:
        lines.append(f"The {winner} student beat the distilled one beyond seed noise, so it is the student exported and profiled "
                     f"here (from compare/{winner}/student.pt), not distill/student.pt.")  # fmt: skip
    backends = list(dict.fromkeys(c["backend"] for c in cands))
    if len(backends) > 1:  # a user tied to one runtime: the same rule among what runs on it
        per = []
        for b in backends:
            best = recommend([c for c in cands if c["backend"] == b], budget_ms)
            name = BACKEND_NAMES.get(b, b)
            per.append(f"{name}: {best['file']} ({best['model']}, {best['latency_ms']:.3f} ms, top-1 {best['top1']:.1f}%)" if best
                       else f"{name}: nothing within the budget")  # fmt: skip
        lines.append("Per backend, by the same rule: " + "; ".join(per) + ".")
    front = pareto(cands)
    lines.append("Pareto set (no other artifact is both faster and more accurate): " + "; ".join(_describe(c) for c in front) + ".")
    return lines


def summary_lines(run: RunFiles, budget_ms: float | None = None) -> list[str]:
    """One line per claim a reader would put on a slide: did it help, what to deploy, then the rest."""
    lines = evidence_lines(run) + recommendation_lines(run, budget_ms) + speed_lines(run.profile or {})
    for name, side in run.exports.items():
        q = side.get("int8")
        if q:
            metric, before, after, agree = _int8_scores(q)
            same = f"{_fmt(agree, 1)}% of answers equal to fp32" if metric == "top-1" else f"AP50 {_fmt(agree, 1)} against fp32's boxes"
            lines.append(f"INT8 ({name.removesuffix('.json')}.onnx): {metric} {_fmt(before, 1)} -> {_fmt(after, 1)}, {same}")
    if run.cross:
        metric = run.cross["metric"]
        res = run.cross["results"]
        parts = [f"{name.replace('_', ' ')} {_fmt(row.get(metric))}" for name, row in res.items()]
        lines.append(f"Cross distillation ({run.cross['task']}, {metric}): " + ", ".join(parts))
    if run.seeds:
        f, n = run.seeds["final_top1"], len(run.seeds["runs"])
        lines.append(f"{run.seeds['student']} by {run.seeds['method']} over {n} seeds: top-1 {f['mean']:.2f} ± {f['std']:.2f} (last epoch)")
    if not lines and run.students:
        for name, side in run.students.items():
            if _top1(side) is not None:
                lines.append(f"{side.get('arch')} ({name}): top-1 {_fmt(_top1(side), 1)}")
    return lines or ["This run has no finished student yet: run the remaining stages, then compressor report again."]


def section_summary(run: RunFiles) -> Section:
    s = Section("summary", text=summary_lines(run, run.budget_ms))
    warnings = (run.profile or {}).get("warnings") or []
    if warnings:
        s.text.append(f"The profile warns ({len(warnings)}): " + "; ".join(warnings[:3]) + ("; ..." if len(warnings) > 3 else ""))
    return s


def section_teacher(run: RunFiles) -> Section:
    t = run.teacher
    if t is None:
        plan = run.plan or {}
        given = plan.get("teacher_checkpoint")
        return Section("teacher", text=[f"Teacher given as {given} ({plan.get('teacher_arch')})." if given else "No teacher in this run."])
    scores = t.get("metrics", {}).get("final") or t.get("scores") or {}
    rows = [[str(t.get("arch")), str(t.get("num_classes")), "x".join(map(str, t.get("input_size", []))), t.get("domain", "-"),
             ", ".join(f"{k} {_fmt(v)}" for k, v in scores.items()), str(t.get("digest", "-"))[:19]]]  # fmt: skip
    return Section("teacher", tables=[("", ["arch", "classes", "input", "domain", "scores", "weights digest"], rows)])


def section_hints(run: RunFiles) -> Section:
    p = run.plan
    if p is None:
        return Section("hints", text=["No hint plan in this run: hints at the baseline points (stage ends), or the method reads none."])
    names = p["candidates"]
    chosen = ", ".join(f"{i} ({names[i - 1]})" for i in p["hints"])
    base = ", ".join(f"{i} ({names[i - 1]})" for i in p["baseline_hints"])
    s = Section("hints", text=[f"{len(names)} candidate points of {p['teacher_arch']}, clustered into k = {p['k']} groups by "
                               f"{p['metric']} on {p['samples']} samples (centroid: {p.get('centroid', 'kernel')}).",
                               f"Chosen hints: {chosen}.", f"Baseline (stage ends): {base}."])  # fmt: skip
    role = {**{i: "baseline" for i in p["baseline_hints"]}, **{i: "chosen" for i in p["hints"]}}
    rows = [[str(i), n, str(st), str(lab + 1), role.get(i, "")]
            for i, (n, st, lab) in enumerate(zip(names, p["candidate_stages"], p["labels"], strict=True), start=1)]  # fmt: skip
    s.tables.append(("", ["point", "name", "stage", "cluster", "hint"], rows))
    heatmap = run.folders["hints"] / "similarity.png"
    if heatmap.exists():
        s.images["Similarity between the teacher's candidate points"] = heatmap
    return s


def _curve(row: dict[str, Any], weighted: bool = False) -> tuple[dict[str, float], float | None]:
    """(loss terms by name, top-1) of one metrics row, in the engine's or cross distillation's format;
    ``weighted``: each term times its weight in that epoch's total (where the row records the weights)."""
    terms = row.get("train", row)
    weights = (row.get("weights") or {}) if weighted else {}
    losses = {k: float(v) * weights.get(k, 1.0) for k, v in terms.items() if k not in NOT_TERMS and isinstance(v, int | float)}
    scores = row.get("eval") or {}
    return losses, scores.get("top1", scores.get("AP50"))


def plot_training(metrics: dict[str, list[dict[str, Any]]], teacher_score: float | None = None) -> bytes:
    """One row per network: loss terms by name as weighted into the total (log axis; the legend gives
    each weight) and the score on the evaluation split, with the teacher's final score as a line."""
    fig = Figure(figsize=(10, 3.2 * len(metrics)))
    axes = fig.subplots(len(metrics), 2, squeeze=False)
    for (name, rows), (ax_loss, ax_acc) in zip(metrics.items(), axes, strict=True):
        epochs = list(range(1, len(rows) + 1))
        curves = [_curve(r, weighted=True) for r in rows]
        last_weights = rows[-1].get("weights") or {}
        for term in dict.fromkeys(k for losses, _ in curves for k in losses):
            label = term if term == "loss" or term not in last_weights else f"{term} x {last_weights[term]:g}"
            style = {"color": "#000", "lw": 2} if term == "loss" else {}
            ax_loss.plot(epochs, [losses.get(term, float("nan")) for losses, _ in curves], marker=".", label=label, **style)
        ax_loss.set_yscale("log")
        what = "weighted terms and their total" if last_weights else "loss terms"
        ax_loss.set(title=f"{name}: {what}", xlabel="epoch", ylabel="mean over the epoch (log)")
        ax_loss.legend(fontsize=7)
        top1 = [t for _, t in curves]
        if any(t is not None for t in top1):
            ax_acc.plot(epochs, [float("nan") if t is None else t for t in top1], marker="o", color="#2a7", label=name)
            if teacher_score is not None and name != "teacher":
                ax_acc.axhline(teacher_score, color="#c33", ls="--", lw=1, label=f"teacher {teacher_score:.1f}")
            ax_acc.legend(fontsize=7, loc="lower right")
        else:
            ax_acc.text(0.5, 0.5, "not evaluated per epoch", ha="center", va="center", transform=ax_acc.transAxes)
        ax_acc.set(title=f"{name}: score on the evaluation split", xlabel="epoch", ylabel="top-1 or AP50 (%)")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def section_training(run: RunFiles) -> Section:
    if not run.metrics:
        return Section("training", text=["No metrics.jsonl in this run (a given teacher is not retrained)."])
    teacher_score = ((run.teacher or {}).get("metrics") or {}).get("final", {}).get("top1")
    path = atomic_write(run.root / "training.png", lambda f: f.write(plot_training(run.metrics, teacher_score)))
    last = {name: _curve(rows[-1]) for name, rows in run.metrics.items()}
    text = [f"{name}: {len(run.metrics[name])} epochs, last loss terms " + ", ".join(f"{k} {v:.4g}" for k, v in losses.items())
            + (f", top-1 {top1:.2f}" if top1 is not None else "") for name, (losses, top1) in last.items()]  # fmt: skip
    return Section("training", text=text, images={"Training curves": path})


def section_results(run: RunFiles) -> Section:
    s = Section("results")
    if run.cross:
        metric_keys = [k for k in next(iter(run.cross["results"].values())) if k not in ("arch", "domain", "params")]
        rows = [[n.replace("_", " "), r["arch"], r["domain"], human_count(r.get("params") or 0)] + [_fmt(r[m]) for m in metric_keys]
                for n, r in run.cross["results"].items()]  # fmt: skip
        s.text.append(f"Hints {run.cross['hint_method']} x {run.cross['lambda']}: teacher points {run.cross['teacher_points']} -> "
                      f"student points {run.cross['student_points']}.")  # fmt: skip
        s.tables.append(("", ["network", "arch", "domain", "params", *metric_keys], rows))
        return s
    rows = []
    for name, side in [("teacher", run.teacher), *run.students.items()]:
        if side:
            made = side.get("made_by") or {}
            final = (side.get("metrics") or {}).get("final") or {}
            rows.append([name, str(side.get("arch")), made.get("method", "-"), str(made.get("teacher_hints") or "-"),
                         str(made.get("student_hints") or "-"), _fmt(final.get("top1")), _fmt(final.get("top5"))])  # fmt: skip
    if rows:
        s.tables.append(("", ["network", "arch", "method", "teacher hints", "student hints", "top-1 %", "top-5 %"], rows))
    else:
        s.text.append("No trained network in this run yet.")
    if run.seeds:
        f, b = run.seeds["final_top1"], run.seeds["best_top1"]
        rows = [[str(r["seed"]), _fmt(r["final_top1"]), _fmt(r["best_top1"])] for r in run.seeds["runs"]]
        rows.append(["mean ± std", f"{f['mean']:.2f} ± {f['std']:.2f}", f"{b['mean']:.2f} ± {b['std']:.2f}"])
        s.tables.append((f"The student once per seed (the first is the exported one; {len(run.seeds['runs'])} runs)",
                         ["seed", "top-1 % (last epoch)", "best top-1 %"], rows))  # fmt: skip
    return s


def section_export(run: RunFiles) -> Section:
    if not run.exports:
        return Section("export", text=["Nothing exported in this run."])
    rows = []
    for name, side in run.exports.items():
        parity, q = side.get("parity") or {}, side.get("int8") or {}
        parity_text = f"max |diff| {parity['max_abs']:.2e} ({'ok' if parity.get('ok') else 'FAILED'})" if parity else "-"
        metric, before, after, agree = _int8_scores(q)
        int8 = f"{metric} {_fmt(before)} -> {_fmt(after)} (agreement {_fmt(agree, 1)})" if q else "-"
        rows.append([name.removesuffix(".json"), side.get("precision", "-"), str(side.get("opset", "-")), parity_text, int8,
                     str(side.get("digest", "-"))[:19]])  # fmt: skip
    section = Section("export", tables=[("", ["file", "precision", "opset", "torch vs ONNX parity", "INT8: fp32 -> int8", "digest"], rows)])
    for side in run.exports.values():
        _int8_details(section, side.get("int8") or {}, run.root / "export")
    return section


def _int8_details(section: Section, q: dict[str, Any], folder: Path) -> None:
    """The INT8 sensitivity sweep (its most sensitive layers and its plot), the float fallback and
    quantization-aware training, where the export recorded them."""
    fallen, sweep = q.get("fallback"), _json(folder / q["sensitivity"]) if q.get("sensitivity") else None
    metric, before, after, _ = _int8_scores(q)
    key = "AP50" if metric == "AP50" else "top1"
    if sweep is not None:
        worst = sorted(sweep["layers"], key=lambda r: r["int8_alone"]["sqnr_db"])[:10]
        rows = [[str(r["index"]), r["layer"], r["op"], _fmt(r["int8_alone"]["sqnr_db"], 1), _fmt(r["int8_alone"]["agreement"], 1),
                 _fmt(r["float_alone"]["sqnr_db"], 1), _fmt(r["float_alone"][key])] for r in worst]  # fmt: skip
        title = f"INT8 sensitivity: the {len(worst)} most sensitive of {len(sweep['layers'])} layers ({sweep['images']} images)"
        header = ["#", "layer", "op", "INT8 alone: SQNR dB", "agreement", "float alone: SQNR dB", metric]
        section.tables.append((title, header, rows))
        if sweep.get("kernel_batch"):
            from compressor.deploy.export.sensitivity import kernel_summary

            section.text.append(kernel_summary(sweep))
        if sweep.get("hint_cka"):
            cka = ", ".join(f"{r['point']} {r['cka']:.3f}" for r in sweep["hint_cka"])
            section.text.append(f"CKA between fp32 and all-INT8 activations at the hint points (1 = unchanged): {cka}.")
        plot = folder / q["sensitivity"].replace(".json", ".png")
        if plot.exists():
            section.images["INT8 sensitivity per layer"] = plot
    if q.get("float_layers_forced"):
        section.text.append(f"Kept float by --int8-float: {', '.join(q['float_layers_forced'])}.")
    if fallen:
        lat = fallen.get("latency_ms_batch8") or {}
        section.text.append(f"Float fallback for a {fallen['budget']}-point {metric} budget: {len(fallen['float_layers'])} layers kept "
                            f"float ({', '.join(fallen['float_layers']) or 'none'}), {metric} {_fmt(fallen[key])} "
                            f"(fp32 {_fmt(fallen[f'fp32_{key}'])}); ONNX Runtime batch 8: fp32 {_fmt(lat.get('fp32'), 3)} ms, "
                            f"all INT8 {_fmt(lat.get('int8'), 3)} ms, fallback {_fmt(lat.get('fallback'), 3)} ms.")  # fmt: skip
    if q.get("qat"):
        parity = q.get("parity") or {}
        verdict = "ok" if parity.get("ok") else "FAILED"
        agree = (f"on {_fmt(parity.get('top1_agreement'), 1)}% of top-1s" if metric == "top-1"
                 else f"at AP50 {_fmt(parity.get('detection_agreement'), 1)} against its detections")  # fmt: skip
        section.text.append(f"Quantization-aware training ({q['qat'].get('method')}, {q['qat'].get('epochs')} epochs): INT8 {metric} "
                            f"{_fmt(after)} vs fp32 {_fmt(before)}; ONNX Runtime's integer kernels agree with the "
                            f"training graph {agree} ({verdict}).")  # fmt: skip


def section_profile(run: RunFiles) -> Section:
    if run.profile is None:
        return Section("profile", text=["Not profiled in this run: compressor profile CHECKPOINT --out RUN_DIR/profile adds it."])
    from compressor.deploy.profile.report import tables

    s = Section("profile", tables=[t for t in tables(run.profile) if t[0] != "Machine"])  # the machine is in the provenance
    settings = {**run.profile["settings"], "e2e_images": len(run.profile["settings"].get("e2e_images") or [])}
    s.text.append("Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + ".")
    for png, title in (("latency.png", "Latency distributions"), ("accuracy_latency.png", "Accuracy against latency"),
                       ("memory.png", "Memory per backend"), ("throughput.png", "Throughput")):  # fmt: skip
        if (run.folders["profile"] / png).exists():
            s.images[title] = run.folders["profile"] / png
    return s


def section_provenance(run: RunFiles) -> Section:
    from compressor.deploy.profile.machine import machine_info

    mach = (run.profile or {}).get("machine") or machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v)
    digests = [[name, str(side.get("arch", "-")), str(side.get("digest", "-"))] for name, side in
               [("teacher", run.teacher), *run.students.items(), *run.exports.items()] if side]  # fmt: skip
    s = Section("provenance", pre=run.config or "(no config.yaml in the run folder)")
    s.text.append(f"Machine: {mach['cpu']} ({mach['cpu_count']} cores), GPU {(mach.get('gpu') or {}).get('name', 'none')}, "
                  f"Python {mach.get('python')}; {versions}.")  # fmt: skip
    s.tables.append(("Checkpoints and exported files", ["file", "arch", "digest"], digests))
    return s


BUILDERS: tuple[Callable[[RunFiles], Section], ...] = (section_summary, section_teacher, section_hints, section_training, section_results,
                                                       section_export, section_profile, section_provenance)  # fmt: skip


# ---------------------------------------------------------------- rendering


def render_markdown(sections: list[Section], root: Path) -> str:
    lines = [f"<!-- {GENERATOR} -->", "# Run report", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        lines += [f"- {t}" for t in s.text] if s.key == "summary" else [line for t in s.text for line in (t, "")]
        lines.append("")
        for title, header, rows in s.tables:
            lines += [f"### {title}", ""] if title else []
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows] + [""]
        lines += [f"![{name}]({path.relative_to(root).as_posix()})" for name, path in s.images.items()]
        if s.pre is not None:
            lines += ["```yaml", s.pre.rstrip(), "```"]
        lines.append("")
    return "\n".join(lines)


def render_html(sections: list[Section]) -> str:
    esc = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>", f"<meta name='generator' content='{GENERATOR}'>",
             "<title>Run report</title><style>body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em}",
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}",
             "th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}",
             "#summary li{font-size:1.1em;margin:.3em 0}</style></head><body><h1>Run report</h1>"]  # fmt: skip
    for s in sections:
        parts.append(f"<section id='{s.key}'><h2>{esc(s.title)}</h2>")
        if s.key == "summary":
            parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in s.text) + "</ul>")
        else:
            parts += [f"<p>{esc(t)}</p>" for t in s.text]
        for title, header, rows in s.tables:
            parts.append(f"<h3>{esc(title)}</h3>" if title else "")
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for name, path in s.images.items():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{data}'><figcaption>{esc(name)}</figcaption></figure>")
        if s.pre is not None:
            parts.append(f"<pre>{esc(s.pre)}</pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_run_report(root: str | Path, overwrite: bool = False, budget_ms: float | None = None) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` (and ``training.png``) into the run folder.

    A ``report.html`` this tool did not write is left alone unless ``overwrite`` is set.
    """
    run = read_run(root)
    for name in ("report.html", "report.md", "training.png"):
        target = run.root / name
        if target.exists() and not target.is_file() or target.is_symlink():
            raise UserError(f"{target} is a folder or a link, not a report this tool wrote; move it away and run again")
        if name != "training.png" and target.exists() and not overwrite and GENERATOR not in target.read_text(errors="replace")[:2000]:
            raise UserError(f"{target} exists and was not written by compressor report; move it away or pass --overwrite")
    run.budget_ms = budget_ms
    sections = [build(run) for build in BUILDERS]
    return {"report.html": atomic_write_text(run.root / "report.html", render_html(sections)),
            "report.md": atomic_write_text(run.root / "report.md", render_markdown(sections, run.root))}  # fmt: skip
