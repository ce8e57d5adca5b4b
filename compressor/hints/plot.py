"""The similarity heatmap of a hint plan: why those layers were chosen, at a glance."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # a bare Figure renders off-screen; no global backend switch in the user's process
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from ..io import atomic_write  # noqa: E402
from .plan import HintPlan  # noqa: E402


def plot_similarity(plan: HintPlan, path: str | Path, dpi: int = 150) -> Path:
    """Heatmap of the L x L similarity with a cluster strip, stage boundaries, and the selected
    (filled triangles) and baseline (open circles) hints marked on both axes."""
    sim = np.asarray(plan.similarity)
    num = len(sim)
    labels = np.asarray(plan.labels)
    fig = Figure(figsize=(7.2, 7.6))
    ax = fig.add_axes([0.1, 0.08, 0.72, 0.72])
    strip = fig.add_axes([0.1, 0.81, 0.72, 0.025], sharex=ax)
    cax = fig.add_axes([0.85, 0.08, 0.025, 0.72])

    extent = (0.5, num + 0.5, num + 0.5, 0.5)
    im = ax.imshow(sim, cmap="viridis", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    fig.colorbar(im, cax=cax, label=f"similarity ({plan.metric})")

    cmap = matplotlib.colormaps["tab10"]
    strip.imshow(labels[None, :], cmap=cmap, vmin=0, vmax=9, aspect="auto", extent=(0.5, num + 0.5, 0, 1), interpolation="nearest")
    strip.set_yticks([])
    strip.tick_params(labelbottom=False, bottom=False)
    strip.set_title(
        f"{plan.teacher_arch}: {plan.k} hints by {plan.metric}{' (normalised)' if plan.normalize else ''}, "
        f"{plan.samples} samples, {'pre' if plan.preact else 'post'}-activation",
        fontsize=10,
        pad=18,
    )
    for j in range(plan.k):
        members = np.flatnonzero(labels == j) + 1
        strip.text(members.mean(), 0.5, f"C{j + 1}", ha="center", va="center", fontsize=8, color="white", weight="bold")

    # cluster boundaries along the network, stage boundaries dashed
    for a in range(1, num):
        if labels[a] != labels[a - 1]:
            for line in (ax.axvline, ax.axhline):
                line(a + 0.5, color="white", lw=1.6)
        if plan.candidate_stages[a] != plan.candidate_stages[a - 1]:
            for line in (ax.axvline, ax.axhline):
                line(a + 0.5, color="white", lw=0.8, ls="--", alpha=0.7)

    ax.plot(plan.hints, [0.5] * len(plan.hints), "v", color="red", ms=9, clip_on=False, label=f"selected {plan.hints}")
    ax.plot([0.5] * len(plan.hints), plan.hints, ">", color="red", ms=9, clip_on=False)
    ax.plot(
        plan.baseline_hints,
        [num + 0.5] * len(plan.baseline_hints),
        "o",
        mfc="none",
        mec="black",
        ms=8,
        clip_on=False,
        label=f"baseline (stage ends) {plan.baseline_hints}",
    )
    for h in plan.hints:
        ax.add_patch(Rectangle((h - 0.5, h - 0.5), 1, 1, fill=False, ec="red", lw=1.5, zorder=5))  # above the boundary lines
    # every point up to 30 (a 9-point plan lost 4 and 7 when only marked points were ticked), else every 5th and the marked ones
    every = range(1, num + 1) if num <= 30 else range(5, num + 1, 5)
    ticks = sorted({1, num} | set(every) | set(plan.hints) | set(plan.baseline_hints))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("candidate sub-block (1-based)")
    ax.set_ylabel("candidate sub-block (1-based)")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="#444", lw=1.6, label="cluster boundary (white on the map)"),
                Line2D([], [], color="#444", lw=0.8, ls="--", label="stage boundary (white, dashed)"),
                Rectangle((0, 0), 1, 1, fill=False, ec="red", lw=1.5, label="selected point on the diagonal")]  # fmt: skip
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=7, frameon=False)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))
