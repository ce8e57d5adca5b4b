"""HEVC compressed-domain images from a real encoder (x265), for cross distillation (000 ch. 5)."""

from .analysis import AnalysisFormatError, IntraAnalysis, parse_intra_analysis
from .convert import ConvertOptions, convert_folder, hevc_image
from .encoder import Encoder, EncoderSettings, find_encoder
from .render import DEFAULT_PARTITION_LEVELS, VARIANTS, partition_image, prediction_image

__all__ = ["AnalysisFormatError", "IntraAnalysis", "parse_intra_analysis", "ConvertOptions", "convert_folder", "hevc_image",
           "Encoder", "EncoderSettings", "find_encoder", "DEFAULT_PARTITION_LEVELS", "VARIANTS", "partition_image",
           "prediction_image"]  # fmt: skip
