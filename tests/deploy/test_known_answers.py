"""Checks with a known answer, written against the bugs a seeded-bug review found unnoticed: statistics
over the wrong samples, the minimum-calls rule, parity on the first sample only, per-tensor weight
scales, a resumed or exported artifact that is not the run's own."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from compressor.deploy.export.onnx_export import check_parity
from compressor.deploy.profile.latency import interleaved_latency, measure_latency
from compressor.deploy.runtime.base import Runtime
from compressor.models import create_model
from onnx import numpy_helper
from torch import nn

from compressor.cli import main

DATA = "synthetic:classes=4,train=48,test=24,size=32"


class ScriptedRuntime(Runtime):
    """Each call advances a fake clock by the next scripted duration (ms)."""

    backend = "scripted"

    def __init__(self, durations_ms: list[float]):
        self.durations, self.now = list(durations_ms), 0.0

    def clock(self) -> float:
        return self.now

    def __call__(self, batch):
        self.now += (self.durations.pop(0) if self.durations else 1.0) / 1000.0
        return np.zeros((len(batch), 2), np.float32)


def test_round_statistics_are_medians_of_the_rounds_medians():
    # round medians 2, 2, 50 -> 2; the median of all nine calls would be 50
    rt = ScriptedRuntime([1, 2, 100, 1, 2, 100, 50, 50, 50])
    out = interleaved_latency([("k", rt, (3, 4, 4), 1)], iters=9, rounds=3, clock=rt.clock, settle=0, pause=0, max_seconds=1e9)["k"]
    assert out["round_median_ms"] == pytest.approx(2.0) and out["p50_ms"] == pytest.approx(50.0)
    assert out["iters"] == 9 and out["rounds"] == 3


def test_at_least_five_calls_are_timed_however_short_the_budget():
    rt = ScriptedRuntime([1000.0] * 60)
    out = measure_latency(rt, (3, 4, 4), 1, warmup=0, iters=50, max_seconds=0.0, clock=rt.clock)
    assert out["iters"] == 5 and out["p50_ms"] == pytest.approx(1000.0)


class _Second(nn.Module):
    """Equals ``inner`` on the first image of a batch and differs on the others."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        return torch.cat([y[:1], y[1:] + 1.0])


def test_parity_compares_every_sample_of_the_batch():
    model = create_model("resnet8", num_classes=4).eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})  # fmt: skip
    assert check_parity(model, buffer.getvalue(), (32, 32), dynamic_batch=True).ok
    parity = check_parity(_Second(model).eval(), buffer.getvalue(), (32, 32), dynamic_batch=True)
    assert not parity.ok and parity.max_abs == pytest.approx(1.0, abs=1e-4)


def test_int8_weight_scales_are_per_output_channel(tmp_path):
    torch.save(create_model("resnet8", num_classes=4).state_dict(), tmp_path / "m.pth")
    assert main(["export", str(tmp_path / "m.pth"), "--int8", "--calib", DATA, "--calib-samples", "16", "--out", str(tmp_path / "e")]) == 0
    model = onnx.load(str(next((tmp_path / "e").glob("*.int8.onnx"))))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 9
    for conv in convs:
        dq = produced[conv.input[1]]  # the weight comes through a DequantizeLinear
        assert dq.op_type == "DequantizeLinear"
        weight_q, scale = inits[dq.input[0]], inits[dq.input[1]]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert scale.shape == (weight_q.shape[0],) and axis == 0, conv.name  # one scale per output channel
        assert len(np.unique(scale)) > 1, conv.name
    sidecar = json.loads(next((tmp_path / "e").glob("*.int8.json")).read_text())
    calibration = sidecar["int8"]["calibration"]
    assert calibration["data"] == DATA and calibration["samples"] == 16


def _run(out, seed: int) -> None:
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--epochs", "1", "--batch-size", "24", "--seed",
                 str(seed), "--out", str(out), "--quiet"]) == 0  # fmt: skip


def test_a_foreign_checkpoint_is_not_resumed_and_a_swapped_artifact_not_exported(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(a, 0)
    _run(b, 1)
    shutil.copy(a / "checkpoints" / "last.pt", b / "checkpoints" / "last.pt")  # another run's training state
    before = (b / "student.pt").read_bytes()
    capsys.readouterr()
    assert main(["distill", "--method", "ce", "--student", "resnet8", "--data", DATA, "--epochs", "2", "--batch-size", "24", "--seed", "1",
                 "--out", str(b), "--resume", "--quiet"]) == 2  # fmt: skip
    assert "holds a run made with other settings" in capsys.readouterr().err and (b / "student.pt").read_bytes() == before
    shutil.copy(a / "student.pt", b / "student.pt")  # other weights under b's sidecar
    assert main(["export", str(b / "student.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "digest" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_iou_exactly_at_the_threshold_matches_in_ap_and_survives_nms():
    """AP counts a match at IoU >= t (COCO); NMS suppresses only above the threshold (torchvision's rule)."""
    from compressor.detection.metrics import match
    from compressor.detection.nms import nms

    det = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.9]])
    gt = torch.tensor([[0.0, 0.0, 2.0, 1.0]])  # intersection 1, union 2: IoU exactly 0.5
    assert match(det, gt, 0.5).tolist() == [True]
    assert match(det, gt, 0.5 + 1e-9).tolist() == [False]
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]


@pytest.mark.parametrize("members, center", [([4], 4), ([2, 3], 2), ([1, 2, 3], 2), ([5, 6, 7, 8], 6)])
def test_a_clusters_center_is_its_middle_member_the_lower_for_even_sizes(members, center):
    from compressor.hints.kmeans import POSITIONS

    assert POSITIONS["center"](members, np.eye(10)) == center
    assert POSITIONS["last"](members, np.eye(10)) == members[-1]


def test_int8_calibration_reads_a_random_sample_of_the_train_split_and_records_it(tmp_path):
    """The sidecar names the files that calibrated: all from train/, none from val/, not the first N."""
    import cv2

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for cls in ("a", "b", "c", "d"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(str(root / split / cls / f"{split}{i}.png"), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    torch.save(create_model("resnet8", num_classes=4).state_dict(), tmp_path / "m.pth")
    spec = f"imagefolder:{root}:size=32"
    assert main(["export", str(tmp_path / "m.pth"), "--int8", "--calib", spec, "--calib-samples", "10", "--out", str(tmp_path / "e")]) == 0
    files = json.loads(next((tmp_path / "e").glob("*.int8.json")).read_text())["int8"]["calibration"]["files"]
    train = sorted(str(p) for p in (root / "train").rglob("*.png"))
    assert len(files) == len(set(files)) == 10 and set(files) <= set(train)
    assert files != train[:10] and {Path(f).parent.name for f in files} != {"a", "b"}  # a random draw, not the first classes


def test_one_detection_per_image_keeps_the_best_one():
    """max_det = 1 (the one-element boundary): only the highest score counts, here a miss, so AP50 is 0."""
    from compressor.detection.metrics import evaluate_detections

    gt = [torch.tensor([[0.0, 0.0, 0.0, 10.0, 10.0]])]
    det = [torch.tensor([[20.0, 20.0, 30.0, 30.0, 0.9, 0.0], [0.0, 0.0, 10.0, 10.0, 0.8, 0.0]])]
    assert evaluate_detections(det, gt, max_det=1).ap50 == 0.0
    assert evaluate_detections(det, gt, max_det=2).ap50 == pytest.approx(0.5)
