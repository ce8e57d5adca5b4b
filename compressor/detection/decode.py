"""Raw YOLOv3 maps -> boxes in input pixels (Redmon & Farhadi 2018, eq. in §2.1):
b_x = (sigmoid(t_x) + c_x) * stride, b_w = p_w * exp(t_w), objectness and classes by sigmoid."""

from __future__ import annotations

import torch


def split_maps(raw: torch.Tensor, num_anchors: int) -> torch.Tensor:
    """(B, A*(5+C), H, W) -> (B, A, H, W, 5+C)."""
    b, _, h, w = raw.shape
    return raw.view(b, num_anchors, -1, h, w).permute(0, 1, 3, 4, 2)


def grid_offsets(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 2) cell offsets (c_x, c_y)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys], -1)


def decode(raw_maps: list[torch.Tensor], anchors: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
    """Decode every scale; returns (B, N, 5 + C): x1, y1, x2, y2 (pixels), objectness, class probabilities."""
    outs = []
    for raw, scale_anchors, stride in zip(raw_maps, anchors, strides, strict=True):
        p = split_maps(raw, scale_anchors.shape[0])
        _, _, h, w, _ = p.shape
        xy = (p[..., :2].sigmoid() + grid_offsets(h, w, p.device, p.dtype)) * stride
        wh = p[..., 2:4].exp() * scale_anchors.view(1, -1, 1, 1, 2)
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], -1)
        outs.append(torch.cat([boxes, p[..., 4:].sigmoid()], -1).flatten(1, 3))
    return torch.cat(outs, 1)
