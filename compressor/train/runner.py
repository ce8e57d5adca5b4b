"""Turn a zoo model's forward pass into the ``Outputs`` the losses read."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from compressor.models.features import classifier_name, feature_hooks

from ..losses import Outputs


class FeatureTap:
    """Keeps forward hooks on a model for the life of a run: the features at ``indices`` and
    the classifier's input (the penultimate embedding) of the latest forward pass."""

    def __init__(self, model: nn.Module, indices: Sequence[int], preact: bool):
        self.model = model
        self.indices = list(indices)
        self.store: dict[int, torch.Tensor] = {}
        self._context = feature_hooks(model, self.indices, self.store.__setitem__, preact=preact) if self.indices else None
        if self._context is not None:
            self._context.__enter__()
        classifier = model.get_submodule(classifier_name(model))
        self._embed_handle = classifier.register_forward_pre_hook(self._keep_embedding)
        self.embedding: torch.Tensor | None = None

    def _keep_embedding(self, module: nn.Module, inputs: tuple) -> None:
        self.embedding = inputs[0]

    def reset(self) -> None:
        """Call before every forward pass. Besides dropping the last batch's tensors early, this
        keeps ``torch.compile`` from recompiling each step: the hooks' store is part of what a
        compiled graph guards on, and an empty store looks the same at every call."""
        self.store.clear()
        self.embedding = None

    def outputs(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> Outputs:
        feats = [self.store[i] for i in self.indices]
        return Outputs(logits, feats, self.embedding, labels, index)

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None
        self._embed_handle.remove()
