"""Everything that makes a student: checkpoints, datasets, hint selection, losses, training, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-compressor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
