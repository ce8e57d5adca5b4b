"""Paired pixel / HEVC-domain image sets for cross distillation (thesis 000 ch. 5).

Images pair by their path relative to each root without the extension (``cars/0001.png`` pairs
with ``cars/0001.png`` or ``cars/0001.bmp``), so recognition class folders pair too. Detection
labels are YOLO text files (``class cx cy w h`` per line, coordinates normalised to 0..1) with
the same stem under a labels root. ``check_pairs`` reports every unmatched file and malformed
label line at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from .imagefolder import EXTENSIONS


@dataclass
class PairingReport:
    pairs: list[tuple[str, Path, Path]] = field(default_factory=list)  # (stem, pixel image, HEVC image)
    pixel_only: list[str] = field(default_factory=list)
    hevc_only: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # one stem, several images in the same root
    bad_labels: list[str] = field(default_factory=list)  # "path:line: reason"
    missing_labels: list[str] = field(default_factory=list)
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> (M, 5) rows of its well-formed lines

    @property
    def ok(self) -> bool:
        return not (self.pixel_only or self.hevc_only or self.duplicates or self.bad_labels or self.missing_labels)

    def summary(self, limit: int = 5) -> str:
        parts = [f"{len(self.pairs)} pairs"]
        for name, items in (("only in the pixel set", self.pixel_only), ("only in the HEVC set", self.hevc_only),
                            ("stems with several images", self.duplicates), ("images without a label file", self.missing_labels),
                            ("malformed label lines", self.bad_labels)):  # fmt: skip
            if items:
                more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {name}: {', '.join(items[:limit])}{more}")
        return "; ".join(parts)


def _images_by_stem(root: Path, report: PairingReport) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in EXTENSIONS:
            stem = f.relative_to(root).with_suffix("").as_posix()
            if stem in found:
                report.duplicates.append(f"{root.name}/{stem}")
            found[stem] = f
    return found


def parse_yolo_labels(path: Path, num_classes: int | None = None) -> tuple[np.ndarray, list[str]]:
    """YOLO label file -> ((M, 5) float array of class, cx, cy, w, h; problems as "path:line: reason")."""
    rows, problems = [], []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{path}:{n}"
        if len(fields) != 5:
            problems.append(f"{where}: {len(fields)} fields, expected 5 (class cx cy w h)")
            continue
        try:
            cls, cx, cy, w, h = int(fields[0]), *map(float, fields[1:])
        except ValueError:
            problems.append(f"{where}: not numbers: {line.strip()!r}")
            continue
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            problems.append(f"{where}: class {cls} outside 0..{(num_classes or 1) - 1}")
        elif not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
            problems.append(f"{where}: box {cx} {cy} {w} {h} is not normalised to 0..1 with positive size")
        else:
            rows.append((cls, cx, cy, w, h))
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5), problems


def check_pairs(pixel_root: str | Path, hevc_root: str | Path, labels_root: str | Path | None = None,
                num_classes: int | None = None) -> PairingReport:  # fmt: skip
    """Pair the two sets by stem and validate the labels; never raises for content problems."""
    pixel_root, hevc_root = Path(pixel_root), Path(hevc_root)
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes {num_classes}: a detector has at least one class")
    for name, root in (("pixel", pixel_root), ("HEVC", hevc_root)) + ((("labels", Path(labels_root)),) if labels_root else ()):
        if not root.is_dir():
            raise UserError(f"{name} folder {root} does not exist or is not a folder")
    report = PairingReport()
    pixel, hevc = _images_by_stem(pixel_root, report), _images_by_stem(hevc_root, report)
    report.pixel_only = sorted(set(pixel) - set(hevc))
    report.hevc_only = sorted(set(hevc) - set(pixel))
    report.pairs = [(stem, pixel[stem], hevc[stem]) for stem in sorted(set(pixel) & set(hevc))]
    if labels_root is not None:
        for stem, _, _ in report.pairs:
            label = Path(labels_root) / f"{stem}.txt"
            if not label.exists():
                report.missing_labels.append(f"{stem}.txt")
                continue
            report.labels[stem], problems = parse_yolo_labels(label, num_classes)
            report.bad_labels += problems
    if not pixel and not hevc:
        raise UserError(f"neither {pixel_root} nor {hevc_root} holds images ({', '.join(sorted(EXTENSIONS))}); point at the image folders")
    return report
