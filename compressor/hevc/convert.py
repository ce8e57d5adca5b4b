"""Convert a folder of images to HEVC-domain images (``compressor hevc convert``).

Each image is padded (edge replication) to a multiple of the minimum CU size, encoded as one
all-intra HEVC picture, its analysis file parsed, and the chosen variant rendered at the
image's own size and written as a grey PNG at the same relative path. A ``manifest.json``
records the encoder, its version, preset, QP and the source digest for every image; a re-run
with the same settings skips images already done, and one with other settings is refused
instead of mixing two kinds of images in one folder.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data.imagefolder import EXTENSIONS, read_image
from ..errors import UserError
from ..io import atomic_write, atomic_write_json, file_digest
from ..outdir import LOCK
from .analysis import AnalysisFormatError, parse_intra_analysis
from .encoder import Encoder, EncoderSettings
from .render import VARIANTS

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_MIN_SIDE = 64  # ffmpeg's libx265 refuses smaller pictures


@dataclass
class ConvertOptions:
    variant: str = "prediction"
    settings: EncoderSettings = field(default_factory=EncoderSettings)
    levels: dict[int, int] | None = None  # partition variant's grey level per block size
    jobs: int = 0  # 0: one per CPU


def to_i420(image_bgr: np.ndarray, multiple: int) -> tuple[bytes, int, int]:
    """Pad to a multiple of ``multiple`` (and at least 64) by edge replication; BGR -> I420 bytes."""
    h, w = image_bgr.shape[:2]
    ph = max(_MIN_SIDE, -(-h // multiple) * multiple) - h
    pw = max(_MIN_SIDE, -(-w // multiple) * multiple) - w
    padded = cv2.copyMakeBorder(image_bgr, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(padded, cv2.COLOR_BGR2YUV_I420).tobytes(), w + pw, h + ph


def hevc_image(image_bgr: np.ndarray, encoder: Encoder, options: ConvertOptions) -> np.ndarray:
    """One BGR image -> its HEVC-domain grey image (H, W) uint8."""
    h, w = image_bgr.shape[:2]
    yuv, pw, ph = to_i420(image_bgr, options.settings.min_cu)
    analysis = parse_intra_analysis(encoder.encode(yuv, pw, ph, options.settings))
    return VARIANTS.get(options.variant)(analysis, options.levels)[:h, :w]


def list_images(src: Path) -> list[Path]:
    return sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)


def _settings_record(encoder: Encoder, options: ConvertOptions) -> dict:
    return {"encoder": encoder.kind, "encoder_version": encoder.version, "variant": options.variant,
            **asdict(options.settings), "partition_levels": {str(k): v for k, v in (options.levels or {}).items()} or None}  # fmt: skip


def convert_folder(src: str | Path, dst: str | Path, encoder: Encoder, options: ConvertOptions, progress: bool = True) -> dict:
    """Convert every image under ``src`` into ``dst``; return the manifest.

    Raises:
        UserError: missing or empty source, ``dst`` holding images made with other settings,
            an unreadable image, or an analysis file of an unknown layout.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise UserError(f"source folder {src} does not exist or is not a folder")
    VARIANTS.get(options.variant)
    options.settings.check()
    _check_levels(options)
    if options.jobs < 0:
        raise UserError(f"--jobs {options.jobs}: give the number of parallel encodes (>= 1), or 0 for one per CPU")
    images = list_images(src)
    if not images:
        raise UserError(f"{src} holds no images ({', '.join(sorted(EXTENSIONS))})")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise UserError(f"destination {dst} is inside the source folder {src}; choose a folder outside it")
    _check_unique_outputs(src, images)
    settings = _settings_record(encoder, options)
    manifest = _open_manifest(dst, settings)
    done = manifest["images"]

    def work(path: Path) -> tuple[str, dict]:
        rel = path.relative_to(src).with_suffix(".png").as_posix()
        digest = file_digest(path)
        if done.get(rel, {}).get("source_digest") == digest and (dst / rel).exists():
            return rel, done[rel]
        image = read_image(path)
        try:
            grey = hevc_image(image, encoder, options)
        except AnalysisFormatError as e:
            raise UserError(f"{encoder.kind} {encoder.version} wrote an analysis file this parser does not know for {path}: {e}") from None
        png = cv2.imencode(".png", grey)[1]
        atomic_write(dst / rel, lambda f: f.write(png.tobytes()))
        return rel, {"source": path.relative_to(src).as_posix(), "source_digest": digest, "qp": options.settings.qp,
                     "preset": options.settings.preset, "encoder_version": encoder.version}  # fmt: skip

    jobs = options.jobs or os.cpu_count() or 1
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for i, (rel, record) in enumerate(tqdm(pool.map(work, images), total=len(images), desc="hevc convert",
                                                    unit="img", disable=not progress)):  # fmt: skip
                done[rel] = record
                if i % 200 == 199:  # keep finished work findable if the run is interrupted
                    atomic_write_json(dst / MANIFEST, manifest)
    finally:
        atomic_write_json(dst / MANIFEST, manifest)
    return manifest


def _check_unique_outputs(src: Path, images: list[Path]) -> None:
    """Each image becomes ``<stem>.png``: two sources with one stem (``x.jpg``, ``x.png``) would write one file."""
    by_output: dict[str, list[str]] = {}
    for path in images:
        by_output.setdefault(path.relative_to(src).with_suffix(".png").as_posix(), []).append(path.relative_to(src).as_posix())
    clashes = [names for names in by_output.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(" and ".join(names) for names in clashes[:5]) + (f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else "")
        raise UserError(f"{len(clashes)} output name(s) would be written twice: {shown}; rename or remove one image of each pair")


def _check_levels(options: ConvertOptions) -> None:
    """Every coding-block size the settings allow needs a grey level (partition variant)."""
    if options.variant != "partition" or options.levels is None:
        return
    s = options.settings
    sizes = {s.ctu >> d for d in range((s.ctu // s.min_cu).bit_length())} | {s.min_cu // 2}  # + NxN PUs of the smallest CU
    missing = sorted(sizes - set(options.levels))
    bad = {k: v for k, v in options.levels.items() if not 0 <= v <= 255}
    if missing or bad:
        raise UserError(
            f"partition levels {options.levels}: "
            + (f"no grey level for block sizes {missing}" if missing else f"levels outside 0..255: {bad}")
        )


def _open_manifest(dst: Path, settings: dict) -> dict:
    path = dst / MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            raise UserError(f"{path} is not valid JSON; move it away or choose another destination") from None
        if old.get("settings") != settings:
            raise UserError(
                f"{dst} already holds HEVC images made with other settings ({old.get('settings')}); "
                "choose another destination so they are not mixed or overwritten"
            )
        return old
    if dst.exists() and any(p.name != LOCK for p in dst.iterdir()):  # the command's own lock does not count
        raise UserError(f"destination {dst} is not empty and has no {MANIFEST}; choose an empty or new folder")
    return {"version": MANIFEST_VERSION, "settings": settings, "images": {}}
