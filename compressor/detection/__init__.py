"""Object detection pieces for YOLOv3: loss, decoding, NMS and AP evaluation (torch only)."""

from .boxes import box_iou, cxcywh_to_xyxy, wh_iou
from .decode import decode, split_maps
from .loss import YOLOv3Loss
from .metrics import COCO_THRESHOLDS, DetectionScores, average_precision, evaluate_detections
from .nms import batched_nms, nms, postprocess, select_detections

__all__ = ["box_iou", "cxcywh_to_xyxy", "wh_iou", "decode", "split_maps", "YOLOv3Loss", "COCO_THRESHOLDS", "DetectionScores",
           "average_precision", "evaluate_detections", "batched_nms", "nms", "postprocess", "select_detections"]  # fmt: skip
