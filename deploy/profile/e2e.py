"""End-to-end latency: from an encoded image file to the answer, beside model-only latency.

One call reads the file, decodes it (OpenCV), resizes it to the model's input (area averaging
when shrinking, bilinear when enlarging, as the data pipeline does), normalises it, runs the
backend on a batch of one, and turns the output into the answer: softmax + top-1 for a
classifier; for a detector, per-class NMS over the decoded boxes (the same NMS as the exported
graph's ``NonMaxSuppression``). The gap between this and model-only latency is what a camera
application pays on top of the network (8.6 ms model vs 36.5 ms end to end is a typical report
from a Jetson). Images rotate over the given files; the first pass warms the OS file cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from compressor.data import open_dataset
from compressor.data.augment import resize
from compressor.data.imagefolder import EXTENSIONS, read_image
from compressor.errors import UserError
from compressor.io import atomic_write

from ..runtime.base import Runtime
from .latency import summarize

PARTS = ("read_decode", "preprocess", "infer", "answer")


def image_files(path: str | Path) -> list[Path]:
    """An image file, or the image files of a folder (recursively, sorted)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS) if path.is_dir() else []
    if not files:
        raise UserError(f"--e2e {path}: no image files ({', '.join(sorted(EXTENSIONS))}); give an image or a folder of images")
    return files


def write_samples(spec: str, folder: Path, count: int = 8) -> list[Path]:
    """PNG files of the first ``count`` test images of a dataset spec, for ``--e2e`` without files."""
    data = open_dataset(spec, "test")
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(min(count, len(data))):
        rgb = data.raw(i)[0].permute(1, 2, 0).numpy()
        ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
        if not ok:
            raise RuntimeError(f"OpenCV could not encode test image {i} of {spec} as PNG")
        files.append(atomic_write(folder / f"e2e_{i:02d}.png", lambda f, b=png: f.write(b.tobytes())))
    return files


def preprocess(image_bgr: np.ndarray, size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> normalised float32 (1, 3, *size), RGB."""
    rgb = torch.from_numpy(np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1)))
    x = resize(rgb, size).numpy().astype(np.float32) / 255.0
    return ((x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None])[None]


def classify(outputs: list[np.ndarray]) -> tuple[int, float]:
    """(class, probability) of the first image."""
    logits = outputs[0][0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return int(p.argmax()), float(p.max())


def detect(outputs: list[np.ndarray], iou_threshold: float = 0.45, score_threshold: float = 0.25) -> np.ndarray:
    """Kept detections (K, 3) of [batch, class, box] from decoded ``boxes`` (B, N, 4) and ``scores`` (B, C, N)."""
    from ..export.detection import select

    boxes, scores = (torch.from_numpy(np.ascontiguousarray(o)) for o in outputs[:2])
    return select(boxes, scores, 100, iou_threshold, score_threshold).numpy()


def measure_e2e(runtime: Runtime, files: list[Path], size: tuple[int, int], mean, std, detector: bool, warmup: int = 3,
                iters: int = 30, clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:  # fmt: skip
    """Time ``iters`` whole calls (after ``warmup`` passes) and each part of them.

    Returns:
        ``summarize``'s figures of the whole call (batch 1), ``parts_ms`` with the median of each
        part (read + decode, preprocess, inference, answer) and ``images``, the number of files.
    """
    answer = detect if detector else classify
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    totals = []
    for i in range(warmup + iters):
        t0 = clock()
        image = read_image(files[i % len(files)])
        t1 = clock()
        x = preprocess(image, size, mean, std)
        t2 = clock()
        outputs = runtime.run_all(x)
        runtime.synchronize()
        t3 = clock()
        answer(outputs)
        t4 = clock()
        if i >= warmup:
            for key, (a, b) in zip(PARTS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
                parts[key].append((b - a) * 1000.0)
            totals.append((t4 - t0) * 1000.0)
    result = summarize(totals, 1)
    result.pop("samples_ms", None)
    return {**result, "parts_ms": {k: float(np.median(v)) for k, v in parts.items()}, "images": len(files)}
