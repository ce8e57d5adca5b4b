"""Built-in synthetic scenes for cross distillation (no download): licence plates for detection
and six vehicle classes for recognition, 128x96 like the thesis' CD-LP and BIT-Vehicle sets.

``generate_plates(root, train, test)`` writes ``pixel/{train,test}/NNNNN.png`` and YOLO labels
``labels/{train,test}/NNNNN.txt`` (class 0 = plate): one or two plates with random characters,
of random size, colour and slight slant, on cluttered backgrounds. ``generate_vehicles`` writes
``pixel/{train,test}/<class>/NNNNN.png`` for the BIT-Vehicle classes, drawn as side-view
silhouettes whose proportions differ per class. Run ``compressor hevc convert ROOT/pixel
ROOT/hevc`` to make the paired HEVC set. Generation is deterministic for a seed.
"""

from __future__ import annotations

import string
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import UserError
from ..io import atomic_write

WIDTH, HEIGHT = 128, 96
PLATE_CHARS = string.ascii_uppercase + string.digits
VEHICLE_CLASSES = ("bus", "microbus", "minivan", "sedan", "suv", "truck")


def _background(rng: np.random.Generator) -> np.ndarray:
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, HEIGHT)[:, None, None]
    img = ((1 - ramp) * top + ramp * bottom).repeat(WIDTH, 1).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, 40)), y + int(rng.integers(5, 30))), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(3, 20)), color, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))), color, int(rng.integers(1, 4)))
    return img


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = cv2.GaussianBlur(img, (3, 3), float(rng.uniform(0.1, 1.0)))
    return np.clip(img.astype(np.int16) + rng.normal(0, rng.uniform(2, 10), img.shape), 0, 255).astype(np.uint8)


def plate_scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One scene (H, W, 3) BGR and its YOLO labels."""
    img = _background(rng)
    labels: list[tuple[int, float, float, float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(1, 3))):
        pw = int(rng.integers(34, 70))
        ph = max(9, int(pw / rng.uniform(2.8, 4.2)))
        for _attempt in range(20):
            x0, y0 = int(rng.integers(1, WIDTH - pw - 1)), int(rng.integers(1, HEIGHT - ph - 1))
            if all(x0 + pw < bx0 or bx1 < x0 or y0 + ph < by0 or by1 < y0 for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        plate = np.full((ph, pw, 3), (255, 255, 255) if rng.random() < 0.6 else (40, 210, 250), np.uint8)
        cv2.rectangle(plate, (0, 0), (pw - 1, ph - 1), (0, 0, 0), 1)
        text = "".join(rng.choice(list(PLATE_CHARS), int(rng.integers(5, 8))))
        scale = (ph - 4) / 22
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        scale *= min(1.0, (pw - 6) / max(tw, 1))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(plate, text, ((pw - tw) // 2, (ph + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
        shear = float(rng.uniform(-0.15, 0.15))
        m = np.float32([[1, shear, x0 - shear * ph / 2], [0, 1, y0]])
        warped = cv2.warpAffine(plate, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (WIDTH, HEIGHT)) > 127
        img[mask] = warped[mask]
        ys, xs = np.nonzero(mask)
        bx0, by0, bx1, by1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        boxes.append((bx0, by0, bx1, by1))
        labels.append((0, (bx0 + bx1) / 2 / WIDTH, (by0 + by1) / 2 / HEIGHT, (bx1 - bx0) / WIDTH, (by1 - by0) / HEIGHT))
    return _noise(img, rng), labels


# Side-view proportions per class: body length / height (relative to image), cabin extent, wheels.
_VEHICLES = {
    "bus": dict(length=(0.80, 0.92), height=(0.42, 0.52), cabin=(0.0, 1.0), roof=0.0, wheels=2, windows=6),
    "microbus": dict(length=(0.55, 0.65), height=(0.38, 0.46), cabin=(0.05, 0.95), roof=0.0, wheels=2, windows=3),
    "minivan": dict(length=(0.62, 0.72), height=(0.30, 0.36), cabin=(0.15, 0.95), roof=0.25, wheels=2, windows=3),
    "sedan": dict(length=(0.66, 0.78), height=(0.20, 0.26), cabin=(0.28, 0.72), roof=0.45, wheels=2, windows=2),
    "suv": dict(length=(0.62, 0.72), height=(0.30, 0.36), cabin=(0.22, 0.90), roof=0.35, wheels=2, windows=2),
    "truck": dict(length=(0.80, 0.92), height=(0.40, 0.50), cabin=(0.0, 0.28), roof=0.0, wheels=3, windows=1),
}


def vehicle_scene(rng: np.random.Generator, cls: str) -> np.ndarray:
    spec = _VEHICLES[cls]
    img = _background(rng)
    length = int(WIDTH * rng.uniform(*spec["length"]))
    body_h = int(HEIGHT * rng.uniform(*spec["height"]))
    x0 = int(rng.integers(2, max(3, WIDTH - length - 2)))
    ground = int(rng.integers(HEIGHT - 20, HEIGHT - 8))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    low = int(body_h * 0.45) if spec["roof"] else body_h
    cv2.rectangle(img, (x0, ground - low), (x0 + length, ground), color, -1)
    if spec["roof"]:  # a cabin narrower than the body, slanted at the front
        c0, c1 = x0 + int(length * spec["cabin"][0]), x0 + int(length * spec["cabin"][1])
        slant = int((c1 - c0) * spec["roof"] * 0.4)
        cabin = np.array([[c0, ground - low], [c0 + slant, ground - body_h], [c1 - slant // 2, ground - body_h], [c1, ground - low]])
        cv2.fillPoly(img, [cabin], color)
    elif cls == "truck":  # cab in front of a taller cargo box
        cab = int(length * spec["cabin"][1])
        cv2.rectangle(img, (x0 + length - cab, ground - int(body_h * 0.7)), (x0 + length, ground), tuple(255 - c for c in color), -1)
    glass = (int(rng.integers(150, 230)),) * 3
    n, top = spec["windows"], ground - body_h + max(2, body_h // 8)
    span0 = x0 + int(length * (spec["cabin"][0] + 0.05))
    span1 = x0 + int(length * (spec["cabin"][1] - 0.05))
    win_w = max(3, (span1 - span0) // max(n, 1) - 2)
    for k in range(n):
        wx = span0 + k * (win_w + 2)
        cv2.rectangle(img, (wx, top), (wx + win_w, top + max(3, body_h // 4)), glass, -1)
    radius = max(3, body_h // 5 if cls != "sedan" else body_h // 3)
    for k in range(spec["wheels"]):
        wx = x0 + radius + 2 + int((length - 2 * radius - 4) * k / max(spec["wheels"] - 1, 1))
        cv2.circle(img, (wx, ground), radius, (20, 20, 20), -1)
        cv2.circle(img, (wx, ground), max(1, radius // 2), (160, 160, 160), -1)
    return _noise(img, rng)


def _write_png(path: Path, img: np.ndarray) -> None:
    png = cv2.imencode(".png", img)[1]
    atomic_write(path, lambda f: f.write(png.tobytes()))


def _check_root(root: Path) -> None:
    if root.exists() and any(root.iterdir()):
        raise UserError(f"{root} already exists and is not empty; choose a new folder so nothing is overwritten")


def generate_plates(root: str | Path, train: int = 300, test: int = 100, seed: int = 0, progress: bool = False) -> Path:
    root = Path(root)
    _check_root(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for i in tqdm(range(count), desc=f"plates {split}", disable=not progress):
            img, labels = plate_scene(rng)
            _write_png(root / "pixel" / split / f"{i:05d}.png", img)
            text = "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in labels)
            atomic_write(root / "labels" / split / f"{i:05d}.txt", lambda f, t=text: f.write(t.encode()))
    return root


def generate_vehicles(root: str | Path, train: int = 300, test: int = 120, seed: int = 0, progress: bool = False) -> Path:
    """``train`` / ``test`` images in all, spread evenly over the six classes."""
    root = Path(root)
    _check_root(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for i in tqdm(range(count), desc=f"vehicles {split}", disable=not progress):
            cls = VEHICLE_CLASSES[i % len(VEHICLE_CLASSES)]
            _write_png(root / "pixel" / split / cls / f"{i:05d}.png", vehicle_scene(rng, cls))
    return root
