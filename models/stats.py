"""Model size and compute: parameters and multiply-accumulates."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int], batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass for ``batch`` images of ``input_size`` (H, W).

    Counted by torch's FlopCounterMode over convolutions and matrix products (2 FLOPs per MAC);
    BN, activations and pooling are not counted, as in the papers' tables.
    """
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
