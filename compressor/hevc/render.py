"""HEVC-domain images from the parsed intra decisions (thesis 000 ch. 5; Beratoglu et al. 2021).

* ``prediction``: each 4x4 unit is painted with its luma intra mode m mapped linearly to the
  grey level round(255 * m / 34), so every prediction unit is a flat grey region.
* ``partition``: each unit is painted with a grey level for the size of the coding block it
  belongs to. The thesis does not publish these levels; the defaults below (larger blocks
  darker, evenly spaced) are this toolchain's assumption and are configuration.
"""

from __future__ import annotations

import numpy as np

from compressor.models import Registry

from .analysis import UNIT, IntraAnalysis

DEFAULT_PARTITION_LEVELS = {64: 0, 32: 64, 16: 128, 8: 192, 4: 255}


def prediction_image(a: IntraAnalysis) -> np.ndarray:
    grey = np.rint(255.0 * a.modes.astype(np.float64) / 34.0).astype(np.uint8)
    return _upsample(grey, a)


def partition_image(a: IntraAnalysis, levels: dict[int, int] | None = None) -> np.ndarray:
    levels = DEFAULT_PARTITION_LEVELS if levels is None else levels
    sizes = a.block_size
    missing = sorted(set(np.unique(sizes).tolist()) - set(levels))
    if missing:
        raise ValueError(f"no grey level configured for coding-block size(s) {missing}; levels given for {sorted(levels)}")
    lut = np.zeros(int(sizes.max()) + 1, np.uint8)
    for size, level in levels.items():
        if not 0 <= level <= 255:
            raise ValueError(f"grey level {level} for block size {size} is outside 0..255")
        if size < lut.size:
            lut[size] = level
    return _upsample(lut[sizes], a)


def _upsample(units: np.ndarray, a: IntraAnalysis) -> np.ndarray:
    """Per-unit map -> (H, W) image: each unit becomes a flat UNIT x UNIT block."""
    return np.repeat(np.repeat(units, UNIT, axis=0), UNIT, axis=1)[: a.height, : a.width]


VARIANTS: Registry = Registry("HEVC image variant")
VARIANTS.register("prediction", lambda a, levels=None: prediction_image(a))
VARIANTS.register("partition", partition_image)
