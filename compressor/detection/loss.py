"""The YOLOv3 loss (Redmon & Farhadi 2018; darknet's ``yolo_layer``).

Each ground-truth box is assigned to the one anchor, out of all scales' anchors, whose shape
fits it best (IoU of widths/heights with shared centres), at the grid cell holding its centre.
For that prediction: squared error on sigmoid(t_x), sigmoid(t_y) against the offsets inside
the cell and on t_w, t_h against log(w / p_w), log(h / p_h), both weighted by (2 - w h) with
w, h relative to the image; binary cross-entropy on objectness (target 1) and on each class
(independent logistic classifiers). Every other prediction gets objectness BCE with target 0,
unless its decoded box overlaps some ground truth by more than ``ignore_threshold`` (0.5), in
which case it is ignored. Terms are summed over predictions and averaged over the batch.
When two boxes claim the same anchor and cell, the later one wins (as in darknet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import box_iou, cxcywh_to_xyxy, wh_iou
from .decode import grid_offsets, split_maps


class YOLOv3Loss(nn.Module):
    def __init__(self, anchors: torch.Tensor, strides: tuple[int, ...], num_classes: int, ignore_threshold: float = 0.5,
                 box_weight: float = 1.0, obj_weight: float = 1.0, cls_weight: float = 1.0):  # fmt: skip
        super().__init__()
        self.register_buffer("anchors", anchors.detach().clone().float())  # (S, A, 2) pixels
        self.strides = tuple(strides)
        self.num_classes = num_classes
        self.ignore_threshold = ignore_threshold
        self.weights = {"box": box_weight, "obj": obj_weight, "cls": cls_weight}

    def forward(self, raw_maps: list[torch.Tensor], targets: torch.Tensor, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``targets`` (N, 6): batch index, class, cx, cy, w, h (normalised); ``image_size`` (H, W).
        Returns the total ``loss`` and its ``box``, ``obj``, ``cls`` parts."""
        img_h, img_w = image_size
        batch = raw_maps[0].shape[0]
        num_anchors = self.anchors.shape[1]
        scale = targets.new_tensor([img_w, img_h, img_w, img_h])
        gt_px = targets[:, 2:6] * scale  # cx, cy, w, h in pixels
        gt_xyxy = cxcywh_to_xyxy(gt_px)
        best = wh_iou(gt_px[:, 2:4], self.anchors.view(-1, 2)).argmax(1) if len(targets) else targets.new_zeros(0, dtype=torch.long)
        box = obj = cls = raw_maps[0].new_zeros(())
        for s, (raw, stride) in enumerate(zip(raw_maps, self.strides, strict=True)):
            p = split_maps(raw, num_anchors)  # (B, A, H, W, 5 + C)
            _, _, h, w, _ = p.shape
            anchors = self.anchors[s]
            # Objectness targets and the ignore mask from decoded boxes.
            with torch.no_grad():
                xy = (p[..., :2].sigmoid() + grid_offsets(h, w, p.device, p.dtype)) * stride
                wh = p[..., 2:4].exp().clamp(max=1e4) * anchors.view(1, -1, 1, 1, 2)
                pred_xyxy = torch.cat([xy - wh / 2, xy + wh / 2], -1)
                ignore = torch.zeros(p.shape[:4], dtype=torch.bool, device=p.device)
                for b in range(batch):
                    gts = gt_xyxy[targets[:, 0] == b]
                    if len(gts):
                        ignore[b] = box_iou(pred_xyxy[b].reshape(-1, 4), gts).amax(1).view(ignore.shape[1:]) > self.ignore_threshold
            obj_target = torch.zeros(p.shape[:4], device=p.device, dtype=p.dtype)
            mine = (best // num_anchors) == s
            if mine.any():
                t, g = targets[mine], gt_px[mine]
                a = best[mine] % num_anchors
                b = t[:, 0].long()
                gx, gy = g[:, 0] / stride, g[:, 1] / stride
                gi, gj = gx.long().clamp(0, w - 1), gy.long().clamp(0, h - 1)
                # Later duplicates overwrite earlier ones, as darknet does: keep the last per slot.
                slot = ((b * num_anchors + a) * h + gj) * w + gi
                last = torch.zeros(batch * num_anchors * h * w, dtype=torch.long, device=p.device)
                last[slot] = torch.arange(len(slot), device=p.device)
                keep = last[slot] == torch.arange(len(slot), device=p.device)
                b, a, gi, gj, gx, gy, g, t = b[keep], a[keep], gi[keep], gj[keep], gx[keep], gy[keep], g[keep], t[keep]
                pi = p[b, a, gj, gi]  # (M, 5 + C)
                weight = 2.0 - (g[:, 2] / img_w) * (g[:, 3] / img_h)
                txy = torch.stack([gx - gi, gy - gj], 1)
                twh = torch.log(g[:, 2:4] / anchors[a])
                box = box + (weight[:, None] * ((pi[:, :2].sigmoid() - txy) ** 2 + (pi[:, 2:4] - twh) ** 2)).sum()
                onehot = F.one_hot(t[:, 1].long(), self.num_classes).to(p.dtype)
                cls = cls + F.binary_cross_entropy_with_logits(pi[:, 5:], onehot, reduction="sum")
                obj_target[b, a, gj, gi] = 1.0
                ignore[b, a, gj, gi] = False
            counted = ~ignore
            obj = obj + F.binary_cross_entropy_with_logits(p[..., 4][counted], obj_target[counted], reduction="sum")
        parts = {"box": box / batch, "obj": obj / batch, "cls": cls / batch}
        return {"loss": sum(self.weights[k] * v for k, v in parts.items()), **parts}
