import math

import numpy as np
import pytest
import torch
from compressor.models import create_model

from compressor.checkpoint import load_checkpoint
from compressor.detection import (
    YOLOv3Loss,
    average_precision,
    batched_nms,
    box_iou,
    decode,
    evaluate_detections,
    nms,
    postprocess,
)


def test_box_iou_golden():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0]]))


def test_nms_hand_case_and_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # box 3 (0.95) suppresses 0 (IoU 0.9) and 1 (IoU ~0.62); box 2 is apart
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.95).tolist() == [3, 0, 1, 2]
    classes = torch.tensor([0, 1, 0, 0])
    assert sorted(batched_nms(boxes, scores, classes, 0.5).tolist()) == [1, 2, 3]  # other class survives
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_nms_matches_brute_force_greedy():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], 1)
    scores = torch.rand(60, generator=g)
    keep = []
    for i in scores.argsort(descending=True).tolist():
        if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= 0.45 for j in keep):
            keep.append(i)
    assert nms(boxes, scores, 0.45).tolist() == keep


def anchors():
    return torch.tensor([[[4.0, 4], [8, 4], [4, 8]], [[16, 8], [8, 16], [16, 16]], [[32, 16], [16, 32], [32, 32]]])


def test_decode_zero_maps_gives_anchor_boxes_at_cell_centres():
    maps = [torch.zeros(1, 3 * 6, 64 // s, 64 // s) for s in (8, 16, 32)]
    out = decode(maps, anchors(), (8, 16, 32))
    assert out.shape == (1, 3 * (64 + 16 + 4), 6)
    first = out[0, 0]  # scale 8, anchor 0, cell (0, 0): centre 4, 4; size 4 x 4
    torch.testing.assert_close(first[:4], torch.tensor([2.0, 2, 6, 6]))
    torch.testing.assert_close(first[4:], torch.tensor([0.5, 0.5]))
    cell = out[0, 3 * 64 + 16 * 2 + 4 * 0 + 1]  # scale 16, anchor 2, row 0, col 1: centre (24, 8), 16 x 16
    torch.testing.assert_close(cell[:4], torch.tensor([16.0, 0, 32, 16]))


def test_yolo_loss_against_hand_computation():
    """One box, one class, image 64x64: its anchor, cell, targets and every term by the equations."""
    num_classes = 2
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(1, 3 * (5 + num_classes), 64 // s, 64 // s, generator=g) for s in (8, 16, 32)]
    # box centred at (20, 44) px, 14 x 7 px -> best anchor by wh-IoU: (16, 8) = scale 1 (stride 16), anchor 0
    target = torch.tensor([[0, 1, 20 / 64, 44 / 64, 14 / 64, 7 / 64]])
    loss = YOLOv3Loss(anchors(), (8, 16, 32), num_classes, ignore_threshold=1.01)(maps, target, (64, 64))  # ignore nothing

    def bce(x, y):
        return -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))

    p = maps[1].view(3, 7, 4, 4)[0, :, 44 // 16, 20 // 16].tolist()  # anchor 0, row 2, col 1
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    w = 2 - (14 / 64) * (7 / 64)
    box = w * ((sig(p[0]) - (20 / 16 - 1)) ** 2 + (sig(p[1]) - (44 / 16 - 2)) ** 2
               + (p[2] - math.log(14 / 16)) ** 2 + (p[3] - math.log(7 / 8)) ** 2)  # fmt: skip
    cls = bce(p[5], 0) + bce(p[6], 1)
    obj = sum(bce(v, 0) for m in maps for v in m.view(1, 3, 7, -1)[0, :, 4].flatten().tolist()) - bce(p[4], 0) + bce(p[4], 1)
    assert loss["box"].item() == pytest.approx(box, rel=1e-5)
    assert loss["cls"].item() == pytest.approx(cls, rel=1e-5)
    assert loss["obj"].item() == pytest.approx(obj, rel=1e-5)
    assert loss["loss"].item() == pytest.approx(box + cls + obj, rel=1e-5)


def test_yolo_loss_ignores_good_unassigned_predictions_and_handles_empty_targets():
    maps = [torch.zeros(2, 3 * 6, 64 // s, 64 // s, requires_grad=True) for s in (8, 16, 32)]
    crit = YOLOv3Loss(anchors(), (8, 16, 32), 1)
    empty = crit(maps, torch.zeros(0, 6), (64, 64))
    assert empty["box"].item() == 0 and empty["obj"].item() == pytest.approx(3 * 84 * math.log(2), rel=1e-5)  # per image
    # a 6x6 box at (4, 4): assigned to anchor (8, 4); the zero prediction of anchor (4, 8) in the same
    # cell overlaps it by IoU 24/44 > 0.5 and is ignored, anchor (4, 4)'s (IoU 16/36) is not
    target = torch.tensor([[1, 0, 4 / 64, 4 / 64, 6 / 64, 6 / 64]])
    with_target = crit(maps, target, (64, 64))
    assert with_target["obj"].item() == pytest.approx(empty["obj"].item() - math.log(2) / 2, rel=1e-6)
    with_target["loss"].backward()
    assert maps[0].grad.abs().sum() > 0


def test_ap_perfect_none_and_hand_case():
    gt = [torch.tensor([[0, 0.0, 0, 10, 10], [0, 20, 20, 30, 30]])]
    perfect = [torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.8, 0]])]
    assert evaluate_detections(perfect, gt).ap50 == 1.0 and evaluate_detections(perfect, gt).map50_95 == 1.0
    assert evaluate_detections([torch.zeros(0, 6)], gt).ap50 == 0.0
    # TP (0.9), FP (0.8), TP (0.7): recall .5, .5, 1; precision 1, .5, 2/3 -> AP = .5 * 1 + .5 * 2/3
    hand = [torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [50, 50, 60, 60, 0.8, 0], [20, 20, 30, 30, 0.7, 0]])]
    assert evaluate_detections(hand, gt).ap50 == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 2) == pytest.approx(5 / 6)
    # IoU 0.72 counts at thresholds 0.50..0.70 (5 of 10): mAP50-95 = 0.5
    shifted = [torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [20, 20, 30, 27.2, 0.8, 0]])]
    scores = evaluate_detections(shifted, [gt[0]])
    assert scores.ap50 == 1.0 and scores.map50_95 == pytest.approx(0.75)  # box 1 perfect (AP 1), box 2 only to 0.70
    duplicate = [torch.tensor([[0.0, 0, 10, 10, 0.9, 0], [0, 0, 10, 10, 0.8, 0]])]  # a second hit on one box is a FP
    assert evaluate_detections(duplicate, [gt[0][:1]]).ap50 == 1.0
    assert evaluate_detections(duplicate, gt).ap50 == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_detections([torch.zeros(0, 6)], [torch.zeros(0, 5)])


def _cocoeval_transcription(dets, gts, iou_thrs, max_det=100):
    """pycocotools COCOeval.evaluateImg + accumulate for one category, area 'all', no crowd, transcribed.

    dets / gts: per image lists of [x1, y1, x2, y2, score] / [x1, y1, x2, y2]. Returns (T,) AP per threshold."""

    def iou(d, g):  # maskUtils.iou for boxes, in float64 (xywh there; xyxy here)
        out = np.zeros((len(d), len(g)))
        for i, a in enumerate(d):
            for j, b in enumerate(g):
                iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
                ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
                inter = iw * ih
                out[i, j] = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
        return out

    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    per_image = []
    for d, g in zip(dets, gts, strict=True):
        dtind = np.argsort([-x[4] for x in d], kind="mergesort")
        d = [d[i] for i in dtind[0:max_det]]
        ious = iou(d, g)
        dtm = np.zeros((len(iou_thrs), len(d)))
        gtm = np.zeros((len(iou_thrs), len(g)))
        for tind, t in enumerate(iou_thrs):
            for dind in range(len(d)):
                best = min([t, 1 - 1e-10])
                m = -1
                for gind in range(len(g)):
                    if gtm[tind, gind] > 0:
                        continue
                    if ious[dind, gind] < best:
                        continue
                    best = ious[dind, gind]
                    m = gind
                if m == -1:
                    continue
                dtm[tind, dind] = 1
                gtm[tind, m] = 1
        per_image.append((np.array([x[4] for x in d]), dtm, len(g)))
    scores = np.concatenate([e[0] for e in per_image])
    inds = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([e[1] for e in per_image], axis=1)[:, inds]
    npig = sum(e[2] for e in per_image)
    tps, fps = np.logical_and(dtm, True), np.logical_not(dtm)
    tp_sum, fp_sum = np.cumsum(tps, axis=1).astype(float), np.cumsum(fps, axis=1).astype(float)
    ap = []
    for tp, fp in zip(tp_sum, fp_sum, strict=True):
        rc = tp / npig
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        q = np.zeros((len(rec_thrs),))
        for i in range(len(tp) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        inds = np.searchsorted(rc, rec_thrs, side="left")
        try:
            for ri, pi in enumerate(inds):
                q[ri] = pr[pi]
        except IndexError:
            pass
        ap.append(np.mean(q))
    return np.array(ap)


def test_ap_equals_cocoeval_transcription_ties_float64_and_max_det():
    from compressor.detection import COCO_THRESHOLDS

    rng = np.random.default_rng(3)
    dets, gts = [], []
    for _ in range(6):
        g = rng.uniform(0, 80, (4, 2))
        g = np.concatenate([g, g + rng.uniform(5, 20, (4, 2))], 1)
        jitter = g[rng.integers(0, 4, 9)] + rng.normal(0, 2.5, (9, 4))
        d = np.concatenate([jitter, rng.uniform(0, 1, (9, 1))], 1)
        dets.append(d.tolist())
        gts.append(g.tolist())
    # a tie: the first detection overlaps both ground truths by IoU 90/110 exactly; pycocotools gives it to the last
    # (B), so the second detection finds A free (IoU 1); taking A first would leave it B at IoU 0.667 only
    gts.append([[0.0, 0, 10, 10], [2, 0, 12, 10]])
    dets.append([[1.0, 0, 11, 10, 0.99], [0, 0, 10, 10, 0.5]])
    expected = _cocoeval_transcription(dets, gts, COCO_THRESHOLDS)
    ours = evaluate_detections([torch.tensor([[*x, 0] for x in d], dtype=torch.float64).reshape(-1, 6) for d in dets],
                               [torch.tensor([[0, *x] for x in g], dtype=torch.float64) for g in gts])  # fmt: skip
    assert ours.ap50_coco == pytest.approx(expected[0], abs=1e-12)
    assert ours.map50_95_coco == pytest.approx(expected.mean(), abs=1e-12)
    tie = evaluate_detections([torch.tensor([[*x, 0] for x in dets[-1]], dtype=torch.float64)],
                              [torch.tensor([[0, *x] for x in gts[-1]], dtype=torch.float64)])  # fmt: skip
    # tie to B: t <= .80 both TP (AP 1); t >= .85 the first misses (AP .25) -> .775; tie to A would give .625
    assert tie.map50_95 == pytest.approx(0.775)
    assert ours.ap50 > 0 and abs(ours.ap50 - ours.ap50_coco) < 0.02  # all-point vs 101-point on the same curve
    # max_det keeps each image's best-scoring detections
    capped = _cocoeval_transcription(dets, gts, (0.5,), max_det=3)
    assert evaluate_detections([torch.tensor([[*x, 0] for x in d], dtype=torch.float64).reshape(-1, 6) for d in dets],
                               [torch.tensor([[0, *x] for x in g], dtype=torch.float64) for g in gts], (0.5,),
                               max_det=3).ap50_coco == pytest.approx(capped[0], abs=1e-12)  # fmt: skip


def test_postprocess_keeps_the_best_of_overlapping_boxes():
    pred = torch.tensor([[[0.0, 0, 10, 10, 0.9, 0.9], [1, 1, 11, 11, 0.8, 0.9], [30, 30, 40, 40, 0.5, 0.5], [0, 0, 1, 1, 0.0001, 0.5]]])
    (out,) = postprocess(pred, conf_threshold=0.01, iou_threshold=0.5)
    torch.testing.assert_close(out[:, 4], torch.tensor([0.81, 0.25]))
    assert out[:, 5].tolist() == [0, 0]


@pytest.mark.parametrize("name", ["yolov3_darknet53_s", "yolov3_mobilenetv2_s"])
def test_yolo_models_shapes_contract_and_reload(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=(96, 128)).eval()
    x = torch.randn(2, 3, 96, 128)
    maps = model(x)
    assert [tuple(m.shape) for m in maps] == [(2, 24, 12, 16), (2, 24, 6, 8), (2, 24, 3, 4)]
    feats, out = model.forward_features(x, model.baseline_hints())
    assert all(n.startswith("backbone.") for n in (p.name for p in model.hint_points()))
    assert [f.shape[-1] for f in feats.values()] == [64, 32, 16, 8, 4]  # strides 2..32
    torch.save(model.state_dict(), tmp_path / "det.pth")
    loaded = load_checkpoint(tmp_path / "det.pth", arch=name)
    assert loaded.num_classes == 3
    torch.testing.assert_close(loaded.model.anchors, model.anchors)
    for a, b in zip(loaded.model(x), maps, strict=True):
        torch.testing.assert_close(a, b)


def test_full_size_darknet53_backbone_parameter_count():
    with torch.device("meta"):
        model = create_model("yolov3_darknet53", num_classes=80)
    assert sum(p.numel() for p in model.backbone.parameters()) == 40_584_928  # DarkNet-53's 52 convs + BN
