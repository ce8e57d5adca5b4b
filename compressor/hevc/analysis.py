"""Parse x265's ``--analysis-save`` file for all-intra pictures (the layout as x265's encoder source
writes it).

The layout is undocumented and version-specific, so every size is checked and anything
unexpected is refused with a message naming the field, rather than decoded into garbage:

* header: 20 int32; index 15 the reuse level (10), 16 cuTree, 17-19 width, height, CTU size;
* per frame: u32 frameRecordSize, u32 depthBytes, i32 poc, i32 sliceType, i32 scenecut,
  i64 satdCost, i32 numCTUs, i32 numPartitions; then depthBytes bytes each of CU depth,
  chroma mode and partSize (one entry per CU, z-order, an entry at depth d covering
  numPartitions >> 2d units); int8 QP offsets when cuTree; then numCTUs x numPartitions
  luma intra modes, one per 4x4 unit in z-scan order inside each CTU.

The result is per-4x4-unit maps in raster order over the picture (units outside the picture,
which x265 marks 255, are cropped away).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

HEADER = struct.Struct("<20i")
FRAME = struct.Struct("<IIiiiqii")
REUSE_LEVEL = 10
UNIT = 4  # luma samples per side of one partition unit
PART_2Nx2N, PART_NxN = 0, 3


class AnalysisFormatError(ValueError):
    """The analysis file does not have the layout this parser was verified against."""


@dataclass(frozen=True)
class IntraAnalysis:
    """Per-4x4-unit maps over the picture, shape (ceil(H/4), ceil(W/4)), raster order."""

    width: int
    height: int
    ctu: int
    modes: np.ndarray  # luma intra prediction mode 0..34 (0 planar, 1 DC, 2-34 angular)
    depth: np.ndarray  # CU depth (CU size = ctu >> depth)
    part: np.ndarray  # partSize of the CU (0 = 2Nx2N, 3 = NxN)

    @property
    def block_size(self) -> np.ndarray:
        """Coding-block size in luma samples per unit: the CU size, or half of it for NxN PUs."""
        size = self.ctu >> self.depth.astype(np.int64)
        return np.where(self.part == PART_NxN, size // 2, size)


def zscan_to_raster(side: int) -> np.ndarray:
    """(side*side,) z-scan index -> raster index inside a side x side grid (side a power of 2)."""
    z = np.arange(side * side)
    x = np.zeros_like(z)
    y = np.zeros_like(z)
    for bit in range(side.bit_length() - 1):
        x |= ((z >> (2 * bit)) & 1) << bit
        y |= ((z >> (2 * bit + 1)) & 1) << bit
    return y * side + x


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise AnalysisFormatError(f"file ends inside the {what} (needs {offset + size} bytes, has {len(data)})")


def parse_intra_analysis(data: bytes) -> IntraAnalysis:
    """Parse the first (only) frame of an all-intra analysis file.

    Raises:
        AnalysisFormatError: any size, count or value that does not fit the verified layout.
    """
    _need(data, 0, HEADER.size, "80-byte header")
    header = HEADER.unpack_from(data, 0)
    reuse, cutree, width, height, ctu = header[15:20]
    if reuse != REUSE_LEVEL:
        raise AnalysisFormatError(f"header reuse level is {reuse}, expected {REUSE_LEVEL} (--analysis-save-reuse-level 10)")
    if ctu not in (16, 32, 64) or not (0 < width <= 16384 and 0 < height <= 16384):
        raise AnalysisFormatError(f"header gives picture {width}x{height} with CTU size {ctu}: not a layout this parser knows")
    offset = HEADER.size
    _need(data, offset, FRAME.size, "frame record header")
    record_size, depth_bytes, _poc, slice_type, _scenecut, _satd, num_ctus, num_parts = FRAME.unpack_from(data, offset)
    side = ctu // UNIT
    ctus_x, ctus_y = -(-width // ctu), -(-height // ctu)
    if num_parts != side * side:
        raise AnalysisFormatError(f"frame has {num_parts} partitions per CTU, expected {side * side} for {ctu}x{ctu} CTUs")
    if num_ctus != ctus_x * ctus_y:
        raise AnalysisFormatError(f"frame has {num_ctus} CTUs, expected {ctus_x * ctus_y} for a {width}x{height} picture")
    if slice_type != 1:  # x265's X265_TYPE_IDR
        raise AnalysisFormatError(f"frame slice type {slice_type} is not an IDR intra picture: encode all-intra (--keyint 1)")
    body = 3 * depth_bytes + (depth_bytes if cutree else 0) + num_ctus * num_parts
    if record_size != FRAME.size + body:
        raise AnalysisFormatError(f"frame record size {record_size} does not match its contents ({FRAME.size + body} bytes)")
    offset += FRAME.size
    _need(data, offset, body, "frame record")
    depth = np.frombuffer(data, np.uint8, depth_bytes, offset)
    part = np.frombuffer(data, np.uint8, depth_bytes, offset + 2 * depth_bytes)
    offset += body - num_ctus * num_parts
    modes = np.frombuffer(data, np.uint8, num_ctus * num_parts, offset).reshape(num_ctus, num_parts)
    if offset + num_ctus * num_parts != len(data):
        raise AnalysisFormatError(
            f"{len(data) - offset - num_ctus * num_parts} trailing bytes after the frame: more than one frame, or an unknown layout"
        )

    # Expand the per-CU entries to per-unit maps, CTU by CTU.
    max_depth = side.bit_length() - 2  # CU of 8x8 luma = 2x2 units
    unit_depth = np.empty((num_ctus, num_parts), np.uint8)
    unit_part = np.empty((num_ctus, num_parts), np.uint8)
    entry = 0
    for c in range(num_ctus):
        pos = 0
        while pos < num_parts:
            if entry >= depth_bytes:
                raise AnalysisFormatError(f"CU entries run out in CTU {c}: depth records do not tile the CTUs")
            d = int(depth[entry])
            if d > max_depth:
                raise AnalysisFormatError(f"CU depth {d} in CTU {c} exceeds {max_depth} for {ctu}x{ctu} CTUs")
            if part[entry] not in (PART_2Nx2N, PART_NxN):
                raise AnalysisFormatError(f"intra partSize {part[entry]} in CTU {c}: only 0 (2Nx2N) and 3 (NxN) are intra")
            span = num_parts >> (2 * d)
            unit_depth[c, pos : pos + span] = d
            unit_part[c, pos : pos + span] = part[entry]
            pos += span
            entry += 1
        if pos != num_parts:
            raise AnalysisFormatError(f"CU entries overrun CTU {c}")
    if entry != depth_bytes:
        raise AnalysisFormatError(f"{depth_bytes - entry} CU entries left over after tiling every CTU")

    def to_picture(per_ctu: np.ndarray) -> np.ndarray:
        raster = np.empty_like(per_ctu)
        raster[:, zscan_to_raster(side)] = per_ctu
        grid = raster.reshape(ctus_y, ctus_x, side, side).transpose(0, 2, 1, 3).reshape(ctus_y * side, ctus_x * side)
        return np.ascontiguousarray(grid[: -(-height // UNIT), : -(-width // UNIT)])

    analysis = IntraAnalysis(width, height, ctu, to_picture(modes), to_picture(unit_depth), to_picture(unit_part))
    bad = analysis.modes > 34
    if bad.any():
        raise AnalysisFormatError(f"{int(bad.sum())} luma modes inside the picture are outside 0..34 (e.g. {int(analysis.modes[bad][0])})")
    return analysis
