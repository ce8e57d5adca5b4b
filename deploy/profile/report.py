"""report.json (versioned), report.md and a self-contained report.html with plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # a bare Figure renders off-screen; no global backend switch in the user's process
from matplotlib.ticker import FuncFormatter

from compressor.io import atomic_write, atomic_write_json, atomic_write_text  # noqa: E402
from compressor.summary import human_count  # noqa: E402

REQUIRED = {"schema", "version", "machine", "settings", "models", "comparison"}


def validate_report(report: dict[str, Any]) -> None:
    """Check the report's shape (the schema other tools read); raises ValueError naming what is off."""
    missing = REQUIRED - set(report)
    if missing:
        raise ValueError(f"report lacks {sorted(missing)}")
    if report["schema"] != "edge-compressor/profile-report" or report["version"] != 1:
        raise ValueError(f"unknown report schema {report['schema']} v{report['version']}")
    for m in report["models"]:
        for key in ("role", "name", "params", "macs", "backends"):
            if key not in m:
                raise ValueError(f"model entry lacks {key!r}")
        for b in m["backends"]:
            if b.get("status") == "ok":
                for lat in b["latency"]:
                    for key in ("batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "throughput"):
                        if key not in lat:
                            raise ValueError(f"latency entry of {m['name']}/{b['backend']} lacks {key!r}")


def _ok(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in model["backends"] if b.get("status") == "ok"]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    return buf.getvalue()


def plot_latency(report: dict[str, Any]) -> bytes:
    """Box plots of per-call latency, one box per model/backend, one panel per batch size."""
    batches = report["settings"]["batches"]
    fig = Figure(figsize=(4.2 * len(batches), 3.8))
    axes = fig.subplots(1, len(batches), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        data, labels = [], []
        for m in report["models"]:
            for b in _ok(m):
                lat = next((x for x in b["latency"] if x["batch"] == batch), None)
                if lat:
                    data.append(lat["samples_ms"])
                    labels.append(f"{m['name']}\n{b['backend']}")
        if data:
            ax.boxplot(data, showfliers=True, flierprops={"marker": "x", "markersize": 4, "alpha": 0.6})
            ax.set_xticks(range(1, len(labels) + 1), labels, rotation=45, ha="right", fontsize=7)
            ax.set_yscale("log")  # a few slow calls must not flatten every box to a line
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("latency per call (ms, log; x = outliers)")
        ax.grid(axis="y", which="both", alpha=0.3)
    fig.suptitle("Latency distributions", y=1.03)
    return _png(fig)


def plot_accuracy_latency(report: dict[str, Any]) -> bytes | None:
    """Top-1 against latency per sample at the smallest batch (round median), one point per
    model/backend/precision, with the Pareto front (no point both faster and more accurate) drawn
    through them; the y-axis spans at least 5 points, so a 1-point gap does not fill the plot."""
    points = [(m, b) for m in report["models"] for b in _ok(m) if b.get("accuracy")]
    if not points:
        return None
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    markers = {"student": "o", "teacher": "s"}
    xy = []
    for m, b in points:  # a legend entry per point: labels written beside points overlap when points are close
        lat = min(b["latency"], key=lambda x: x["batch"])
        x = lat.get("round_median_ms", lat["p50_ms"]) / lat["batch"]
        xy.append((x, b["accuracy"]["top1"]))
        ax.scatter(x, xy[-1][1], marker=markers.get(m["role"], "^"), s=60, zorder=3, label=f"{m['name']} {b['backend']}/{b['precision']}")
    front, best = [], float("-inf")
    for x, y in sorted(xy, key=lambda p: (p[0], -p[1])):  # fastest first: a point is on the front if it beats every faster one
        if y > best:
            front.append((x, y))
            best = y
    ax.step([x for x, _ in front], [y for _, y in front], where="post", color="#555", ls="--", lw=1, label="Pareto front")
    low, high = min(y for _, y in xy), max(y for _, y in xy)
    pad = max(0.0, 5.0 - (high - low)) / 2
    ax.set_ylim(max(0.0, low - pad - 0.5), min(100.0, high + pad + 0.5))
    ax.legend(fontsize=7, loc="best")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.2, not 2x10^-1
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("latency per sample, smallest batch (ms, log)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_memory(report: dict[str, Any]) -> bytes | None:
    """Per (model, backend): the weights it holds (left; INT8's saving shows here) and the resident
    memory it added at the smallest and the largest batch (right; measured in a fresh process, so
    the runtime's own buffers and arenas are in it and often outweigh a small model's weights)."""
    rows = []
    for m in report["models"]:
        for b in _ok(m):
            sizes = sorted(x["batch"] for x in b["latency"])
            added = [((b.get("memory") or {}).get(str(n)) or {}).get("added_mib") for n in dict.fromkeys((sizes[0], sizes[-1]))]
            if b.get("weight_mib") is not None or any(v is not None for v in added):
                rows.append((f"{m['name']}\n{b['backend']}/{b['precision']}", b.get("weight_mib"), added))
    if not rows:
        return None
    batches = sorted(dict.fromkeys((min(report["settings"]["batches"]), max(report["settings"]["batches"]))))
    fig = Figure(figsize=(max(8, 1.6 * len(rows)), 4.2), layout="constrained")
    weights, added = fig.subplots(1, 2)
    x = np.arange(len(rows))
    names = [r[0] for r in rows]
    weights.bar(x, [r[1] or 0 for r in rows], color="#4c72b0")
    for i, r in enumerate(rows):
        if r[1] is not None:
            weights.annotate(f"{r[1]:.2f}", (i, r[1]), ha="center", va="bottom", fontsize=7)
    weights.set_ylabel("MiB")
    weights.set_title("Weights held (parameters, or the file loaded)")
    width = 0.8 / len(batches)
    for j, (batch, color) in enumerate(zip(batches, ("#55a868", "#c44e52"), strict=False)):
        values = [r[2][j] if j < len(r[2]) and r[2][j] is not None else np.nan for r in rows]
        added.bar(x + (j - (len(batches) - 1) / 2) * width, values, width, color=color, label=f"batch {batch}")
    added.set_ylabel("MiB")
    added.set_title("Resident memory added while running")
    added.legend(fontsize=8)
    for ax in (weights, added):
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_throughput(report: dict[str, Any]) -> bytes:
    """Images per second per batch size from the round medians (the statistic the tables use), with
    the p10-p90 range of the rounds as error bars; points are joined by a thin dotted line only."""
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for m in report["models"]:
        for b in _ok(m):
            lats = b["latency"]
            med = [x.get("round_median_ms", x["p50_ms"]) for x in lats]
            ys = [1000 * x["batch"] / t for x, t in zip(lats, med, strict=True)]
            # the slowest rounds (p90 latency) give the lowest throughput, the fastest (p10) the highest
            below = [y - 1000 * x["batch"] / x.get("round_p90_ms", t) for x, t, y in zip(lats, med, ys, strict=True)]
            above = [1000 * x["batch"] / x.get("round_p10_ms", t) - y for x, t, y in zip(lats, med, ys, strict=True)]
            ax.errorbar([x["batch"] for x in lats], ys, yerr=[below, above], marker="o", ls=":", lw=0.8,
                        capsize=3, label=f"{m['name']} {b['backend']}/{b['precision']}")  # fmt: skip
    ax.set_xscale("log", base=2)
    batches = sorted({x["batch"] for m in report["models"] for b in _ok(m) for x in b["latency"]})
    ax.set_xticks(batches, [str(n) for n in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_title("Throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def _analytic(per_batch: dict) -> str:
    """'0.30 MiB + 1.25 MiB (batch 1); ...' from the graph, or '-' where shapes are dynamic."""
    mib = 2**20
    parts = [f"{v['weight_bytes'] / mib:.2f} + {v['peak_activation_bytes'] / mib:.2f} MiB (batch {b})" for b, v in per_batch.items() if v]
    return "; ".join(parts) or "-"


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, shared by the Markdown and HTML renderings."""
    out = []
    mach = report["machine"]
    gpu = mach["gpu"]["name"] if mach.get("gpu") else "none"
    versions = ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v)
    out.append(("Machine", ["CPU", "cores", "GPU", "JetPack", "versions"],
                [[mach["cpu"], str(mach["cpu_count"]), gpu, mach.get("jetpack") or "-", versions]]))  # fmt: skip
    rows = []
    for m in report["models"]:
        sizes = ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in m["file_size_bytes"].items())
        rows.append([m["role"], m["name"], human_count(m["params"] or 0), human_count(m["macs"] or 0), "x".join(map(str, m["input_size"])),
                     sizes, _analytic(m.get("analytic_memory") or {})])  # fmt: skip
    out.append(("Models", ["role", "model", "params", "MACs", "input", "files", "weights + peak activations (analytic)"], rows))
    rows = []
    for m in report["models"]:
        for b in m["backends"]:
            if b.get("status") != "ok":
                rows.append([m["name"], b["backend"], "-", "skipped", "-", "-", "-", "-", "-", "-", b.get("reason", "")[:90]])
                continue
            acc = b.get("accuracy") or {}
            for lat in b["latency"]:
                mem = (b.get("memory") or {}).get(str(lat["batch"]), {})
                power = ((b.get("power") or {}).get(str(lat["batch"])) or {}).get("energy_per_inference_mj")
                rows.append([m["name"], b["backend"], b["precision"], str(lat["batch"]), _fmt(lat["p50_ms"], 3), _fmt(lat["p99_ms"], 3),
                             _fmt(lat["throughput"], 1), _fmt(b.get("weight_mib"), 2),
                             _fmt(mem.get("added_mib", mem.get("rss_peak_mib")), 1), _fmt(power, 2),
                             _fmt(acc.get("top1"))])  # fmt: skip
    header = ["model", "backend", "precision", "batch", "p50 ms", "p99 ms", "img/s", "weights MiB", "memory added MiB", "mJ/inference",
              "top-1 %"]  # fmt: skip
    out.append(("Latency, memory, power, accuracy", header, rows))
    rows = []
    for m in report["models"]:
        for b in _ok(m):
            if b.get("e2e"):
                e, parts = b["e2e"], b["e2e"]["parts_ms"]
                model_only = next((x["p50_ms"] for x in b["latency"] if x["batch"] == 1), None)
                rows.append([m["name"], b["backend"], b["precision"], _fmt(model_only, 3), _fmt(e["p50_ms"], 3), _fmt(e["p99_ms"], 3),
                             *(_fmt(parts[k], 3) for k in ("read_decode", "preprocess", "infer", "answer"))])  # fmt: skip
    if rows:
        header = ["model", "backend", "precision", "model only p50 ms", "end to end p50 ms", "end to end p99 ms", "read + decode",
                  "resize + normalise", "inference", "answer"]  # fmt: skip
        out.append(("End to end, image file to answer (batch 1; medians of each part in ms)", header, rows))
    if report["comparison"]:
        rows = [
            [r["backend"], f"{r['teacher']} -> {r['student']}",
             f"{human_count(r['teacher_params'])} -> {human_count(r['student_params'])}", f"{100 * r['compression_ratio']:.1f}%",
             f"{r['teacher_latency_ms']:.3f} -> {r['student_latency_ms']:.3f}", f"{r['speedup']:.2f}x",
             f"{_fmt(r['teacher_top1'])} -> {_fmt(r['student_top1'])}", _fmt(r["top1_change"])]
            for r in report["comparison"]
        ]  # fmt: skip
        header = ["backend", "teacher -> student", "params", "compression", "ms/sample", "speed-up", "top-1 %", "change"]
        out.append(("Compression (Table 7 of the paper, per backend)", header, rows))
    return out


def render_markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    lines = ["# Profiling report", "", f"Created {report['created']} in {report['seconds']} s.", ""]
    for title, header, rows in tables(report):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        lines.append("")
    lines += [f"![{name}]({file})" for name, file in images.items()]
    return "\n".join(lines) + "\n"


def render_html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Profiling report</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}",
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}",
             "img{max-width:100%;margin:1em 0}</style></head><body>",
             f"<h1>Profiling report</h1><p>Created {html.escape(report['created'])} in {report['seconds']} s.</p>"]  # fmt: skip
    for title, header, rows in tables(report):
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    for name, data in pngs.items():
        parts.append(
            f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write report.json, report.md, report.html and the plots as PNG files into ``out``."""
    validate_report(report)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = {"Latency distributions": plot_latency(report), "Throughput": plot_throughput(report)}
    for title, plot in (("Accuracy against latency", plot_accuracy_latency), ("Memory per backend", plot_memory)):
        data = plot(report)
        if data is not None:
            pngs[title] = data
    files = {}
    names = {"Latency distributions": "latency.png", "Throughput": "throughput.png", "Accuracy against latency": "accuracy_latency.png",
             "Memory per backend": "memory.png"}  # fmt: skip
    for title, data in pngs.items():
        files[names[title]] = atomic_write(out / names[title], lambda f, d=data: f.write(d))
    files["report.json"] = atomic_write_json(out / "report.json", report)
    files["report.md"] = atomic_write_text(out / "report.md", render_markdown(report, {t: names[t] for t in pngs}))
    files["report.html"] = atomic_write_text(out / "report.html", render_html(report, pngs))
    return files
