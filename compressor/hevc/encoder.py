"""Run a real HEVC encoder (x265) on one picture and return its analysis file.

Two ways to reach x265: the ``x265`` command-line encoder (Debian package ``x265``) or the
ffmpeg that the PyPI package ``imageio-ffmpeg`` bundles (its libx265 takes the same options
through ``-x265-params``), so a pure-PyPI install can convert too. Both give byte-identical
analysis files for the same picture and settings (checked here with x265 3.5 and 4.3).

The analysis layout is undocumented, so only encoder versions it was verified against are
accepted unless the user opts in; the parser checks every record size either way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

VERIFIED_VERSIONS = ("3.5", "4.3")  # analysis layout checked against these x265 releases
_VERSION = re.compile(r"HEVC encoder version (\d+)\.(\d+)")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")  # x265's
_PROBE_SIDE = 64  # ffmpeg refuses pictures smaller than this
_PROBE = np.zeros(_PROBE_SIDE * _PROBE_SIDE * 3 // 2, np.uint8)  # one grey I420 frame


@dataclass(frozen=True)
class EncoderSettings:
    qp: int = 32
    preset: str = "medium"
    ctu: int = 64
    min_cu: int = 8

    def params(self) -> dict[str, str]:
        return {"keyint": "1", "qp": str(self.qp), "ctu": str(self.ctu), "min-cu-size": str(self.min_cu),
                "analysis-save-reuse-level": "10"}  # fmt: skip

    def check(self) -> None:
        if not 0 <= self.qp <= 51:
            raise UserError(f"QP {self.qp} is outside HEVC's 0..51")
        if self.ctu not in (16, 32, 64) or self.min_cu not in (8, 16, 32) or self.min_cu > self.ctu:
            raise UserError(f"CTU {self.ctu} / min CU {self.min_cu}: use a CTU of 16, 32 or 64 and a min CU of 8..CTU")
        if self.preset not in PRESETS:
            raise UserError(f"preset {self.preset!r} is not one of x265's: {', '.join(PRESETS)}")


@dataclass(frozen=True)
class Encoder:
    kind: str  # "x265" or "ffmpeg"
    path: str
    version: str  # e.g. "3.5+1-f0c1022b6"

    @property
    def release(self) -> str:
        m = _VERSION.search(f"HEVC encoder version {self.version}")
        return f"{m.group(1)}.{m.group(2)}" if m else "unknown"

    def command(self, width: int, height: int, analysis: Path, output: Path, s: EncoderSettings, log: str = "error") -> list[str]:
        if self.kind == "x265":
            args = [self.path, "--input", "-", "--input-res", f"{width}x{height}", "--input-csp", "i420", "--fps", "1",
                    "--frames", "1", "--preset", s.preset, "--no-progress", "--log-level", log,
                    "--analysis-save", str(analysis)]  # fmt: skip
            for key, value in s.params().items():
                args += [f"--{key}", value]
            return args + ["-o", str(output)]
        params = ":".join(f"{k}={v}" for k, v in {**s.params(), "analysis-save": str(analysis), "log-level": log}.items())
        return [self.path, "-hide_banner", "-loglevel", "error" if log == "error" else "info", "-nostdin", "-y",
                "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-i", "-", "-frames:v", "1",
                "-c:v", "libx265", "-preset", s.preset, "-x265-params", params, "-f", "hevc", str(output)]  # fmt: skip

    def encode(self, yuv: bytes, width: int, height: int, settings: EncoderSettings) -> bytes:
        """Encode one I420 frame all-intra; return the analysis file's bytes."""
        with tempfile.TemporaryDirectory(prefix="compressor-hevc-") as tmp:
            analysis, output = Path(tmp).resolve() / "analysis.dat", Path(tmp) / "out.hevc"
            proc = subprocess.run(self.command(width, height, analysis, output, settings), input=yuv, capture_output=True, check=False)
            if proc.returncode != 0 or not analysis.exists():
                raise RuntimeError(f"{self.kind} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace').strip()[-500:]}")
            return analysis.read_bytes()


def _probe_version(kind: str, path: str) -> str:
    if kind == "x265":
        proc = subprocess.run([path, "--version"], capture_output=True, check=False)
    else:  # ffmpeg's libx265 prints its version when it opens, at log level info
        enc = Encoder(kind, path, "")
        with tempfile.TemporaryDirectory(prefix="compressor-hevc-") as tmp:
            cmd = enc.command(_PROBE_SIDE, _PROBE_SIDE, Path(tmp).resolve() / "a.dat", Path(tmp) / "o.hevc", EncoderSettings(), log="info")
            proc = subprocess.run(cmd, input=_PROBE.tobytes(), capture_output=True, check=False)
    m = re.search(r"HEVC encoder version (\S+)", (proc.stdout + proc.stderr).decode(errors="replace"))
    if not m:
        raise UserError(f"{path} did not report an x265 version (is it an ffmpeg built with --enable-libx265?)")
    return m.group(1)


def _candidates(prefer: str) -> list[tuple[str, str]]:
    found = []
    if prefer in ("auto", "x265") and (path := shutil.which("x265")):
        found.append(("x265", path))
    if prefer in ("auto", "ffmpeg"):
        try:
            import imageio_ffmpeg

            found.append(("ffmpeg", imageio_ffmpeg.get_ffmpeg_exe()))
        except (ImportError, RuntimeError):
            pass
    return found


def find_encoder(prefer: str = "auto", allow_unverified: bool = False) -> Encoder:
    """The x265 binary if on PATH, else imageio-ffmpeg's ffmpeg (``prefer`` picks one).

    Raises:
        UserError: no encoder found, or its version's analysis layout was never verified.
    """
    if prefer not in ("auto", "x265", "ffmpeg"):
        raise UserError(f"unknown encoder {prefer!r}; use auto, x265 or ffmpeg")
    candidates = _candidates(prefer)
    if not candidates:
        raise UserError(
            "no HEVC encoder found: install Debian's x265 (apt-get install x265) or the PyPI package "
            "imageio-ffmpeg (pip install imageio-ffmpeg), which bundles an ffmpeg with libx265"
        )
    kind, path = candidates[0]
    encoder = Encoder(kind, path, _probe_version(kind, path))
    if encoder.release not in VERIFIED_VERSIONS and not allow_unverified:
        raise UserError(
            f"{kind} at {path} is x265 {encoder.version}; its analysis-file layout was verified only for x265 "
            f"{', '.join(VERIFIED_VERSIONS)}. Use one of those, or pass --allow-unverified-encoder (every record "
            "size is still checked, and an unknown layout is refused)"
        )
    return encoder
