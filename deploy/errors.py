"""Errors of the deployment side."""

from compressor.errors import UserError


class ParityError(RuntimeError):
    """An exported model disagrees with PyTorch beyond tolerance: the export is wrong, not the input."""


class BackendUnavailable(UserError):
    """A requested backend (TensorRT, a CUDA provider, a GPU) is not present on this machine."""
