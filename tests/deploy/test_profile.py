import json

import cv2
import numpy as np
import pytest
import torch
from compressor.deploy.profile.latency import measure_latency, summarize
from compressor.deploy.profile.memory import PeakMemory, current_rss
from compressor.deploy.profile.report import validate_report
from compressor.deploy.profile.run import compression_table
from compressor.deploy.runtime.base import Runtime
from compressor.models import create_model

from compressor.cli import main

DATA = "synthetic:classes=4,train=64,test=48"


class FakeRuntime(Runtime):
    backend = "fake"

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return batch.reshape(len(batch), -1)[:, :4]


def test_latency_uses_the_injected_clock():
    ticks = iter(range(0, 10_000, 2))  # every clock reading advances 2 "seconds"
    rt = FakeRuntime()
    stats = measure_latency(rt, (3, 4, 4), batch=8, warmup=3, iters=6, clock=lambda: next(ticks) / 1000, max_seconds=1e9)
    assert rt.calls == 9 and stats["iters"] == 6
    assert stats["p50_ms"] == pytest.approx(2.0) and stats["throughput"] == pytest.approx(4000.0)


def test_summarize_percentiles():
    s = summarize([float(v) for v in range(1, 101)], batch=2)
    assert s["p50_ms"] == pytest.approx(50.5) and s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5) and s["throughput"] == pytest.approx(2000 / 50.5)


def test_peak_memory_sees_an_allocation():
    with PeakMemory() as mem:
        block = torch.ones(64, 1024, 1024)  # 256 MiB
        del block
    assert current_rss() > 0 and mem.result["rss_increase_mib"] > 200


def test_compression_table_arithmetic():
    def model(name, params, p50, top1):
        latency = [{"batch": 1, "p50_ms": p50}, {"batch": 8, "p50_ms": 8 * p50}]
        backend = {"backend": "ort-cpu", "status": "ok", "latency": latency, "accuracy": {"top1": top1}}
        return {"name": name, "params": params, "backends": [backend]}

    rows = compression_table(model("resnet8x4", 1.23e6, 3.42, 76.07), model("resnet32x4", 7.43e6, 8.00, 79.42))
    assert len(rows) == 1
    r = rows[0]
    assert r["compression_ratio"] == pytest.approx(1 - 1.23 / 7.43)
    assert r["speedup"] == pytest.approx(8.00 / 3.42) and r["top1_change"] == pytest.approx(76.07 - 79.42)


def test_profile_cli_writes_reports(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(create_model("resnet14", num_classes=4).state_dict(), teacher)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--student", "resnet8", "--method", "kd", "--data", DATA, "--epochs", "1",
                 "--batch-size", "16", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    rc = main(["profile", str(out / "student.pt"), "--backend", "torch,ort-cpu,ort-cpu-int8,ort-cuda", "--batch", "1,4",
               "--data", DATA, "--eval-samples", "32", "--iters", "5", "--warmup", "1", "--compare", str(teacher),
               "--compare-arch", "resnet14", "--out", str(tmp_path / "prof"), "--e2e", "--quiet"])  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    validate_report(report)
    student, teacher_entry = report["models"]
    assert student["arch"] == "resnet8" and teacher_entry["arch"] == "resnet14" and student["params"] < teacher_entry["params"]
    by_name = {b["backend"]: b for b in student["backends"]}
    assert by_name["ort-cuda"]["status"] == "skipped" and "CUDAExecutionProvider" in by_name["ort-cuda"]["reason"]
    assert by_name["ort-cpu-int8"]["precision"] == "int8" and by_name["torch"]["accuracy"]["samples"] == 32
    assert [lat["batch"] for lat in by_name["ort-cpu"]["latency"]] == [1, 4]
    # the weights each backend holds: fp32 parameters and buffers in torch, the file loaded by ONNX Runtime (INT8's saving)
    resnet8 = create_model("resnet8", num_classes=4)
    assert by_name["torch"]["weight_mib"] * 2**20 == sum(t.numel() * t.element_size() for t in (*resnet8.parameters(), *resnet8.buffers()))
    files = student["file_size_bytes"]
    assert by_name["ort-cpu"]["weight_mib"] * 2**20 == files["onnx"] and by_name["ort-cpu-int8"]["weight_mib"] * 2**20 == files["int8"]
    assert by_name["ort-cpu-int8"]["weight_mib"] < 0.5 * by_name["ort-cpu"]["weight_mib"]
    assert {r["backend"] for r in report["comparison"]} == {"torch", "ort-cpu", "ort-cpu-int8"}
    assert report["machine"]["cpu"] and report["machine"]["versions"]["torch"]
    e2e = by_name["ort-cpu"]["e2e"]  # PNG files of the test split, timed from the file to the answer
    assert e2e["images"] == 8 and len(report["settings"]["e2e_images"]) == 8 and e2e["iters"] == 30
    assert set(e2e["parts_ms"]) == {"read_decode", "preprocess", "infer", "answer"} and e2e["p50_ms"] >= e2e["parts_ms"]["infer"]
    html = (tmp_path / "prof" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Compression (Table 7" in html
    md = (tmp_path / "prof" / "report.md").read_text()
    assert "| backend |" in md and "latency.png" in md and "End to end, image file to answer" in md
    assert "| weights MiB | memory added MiB |" in md
    for png in ("latency.png", "throughput.png", "accuracy_latency.png", "memory.png"):
        assert (tmp_path / "prof" / png).read_bytes()[:4] == b"\x89PNG"
    assert "report:" in capsys.readouterr().out


def test_profile_bad_input(tmp_path, capsys):
    assert main(["profile", str(tmp_path / "none.pt"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    model = tmp_path / "m.pt"
    torch.save(create_model("resnet8", num_classes=4).state_dict(), model)
    assert main(["profile", str(model), "--backend", "onnxruntime", "--quiet"]) == 2
    assert "unknown backend 'onnxruntime'" in capsys.readouterr().err
    assert main(["profile", str(model), "--arch", "resnet8", "--e2e", "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert "--e2e without a PATH" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(["profile", str(model), "--arch", "resnet8", "--e2e", str(tmp_path / "empty"), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    )
    assert "no image files" in capsys.readouterr().err


def test_detector_profiles_latency_and_compression_without_accuracy(tmp_path, capsys):
    torch.manual_seed(0)
    for name, arch in (("student", "yolov3_mobilenetv2_s"), ("teacher", "yolov3_darknet53_s")):
        torch.save(create_model(arch, num_classes=1, input_size=(96, 128)).state_dict(), tmp_path / f"{name}.pt")
        (tmp_path / f"{name}.json").write_text(json.dumps({"arch": arch, "num_classes": 1, "input_size": [96, 128]}))
    common = ["--batch", "1", "--iters", "3", "--warmup", "1", "--quiet"]
    images = tmp_path / "camera"
    images.mkdir()
    for i, (h, w) in enumerate([(480, 640), (60, 80)]):  # larger and smaller than the input: both resized
        cv2.imwrite(str(images / f"{i}.jpg"), np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8))
    rc = main(["profile", str(tmp_path / "student.pt"), "--backend", "torch,ort-cpu", "--compare", str(tmp_path / "teacher.pt"),
               "--out", str(tmp_path / "prof"), "--e2e", str(images), *common])  # fmt: skip
    assert rc == 0
    report = json.loads((tmp_path / "prof" / "report.json").read_text())
    validate_report(report)
    student = report["models"][0]
    assert [b["status"] for b in student["backends"]] == ["ok", "ok"]
    assert all(b["e2e"]["images"] == 2 and b["e2e"]["parts_ms"]["answer"] > 0 for b in student["backends"])  # decode + NMS
    assert report["models"][1]["params"] > student["params"]
    assert main(["profile", str(tmp_path / "student.pt"), "--data", "synthetic", "--out", str(tmp_path / "p2"), *common]) == 2
    assert "AP50" in capsys.readouterr().err


def test_memory_is_measured_per_model_in_a_fresh_process(tmp_path):
    """Each (model, backend) runs again in its own process: a 7.4 M-parameter model adds more than a 78 K one, by at least
    the difference of their weights (the profiling process's own RSS is the same for both)."""
    from compressor.deploy.profile.run import ProfileOptions, profile_models

    added = {}
    for name in ("resnet8", "resnet32x4"):
        path = tmp_path / f"{name}.pth"
        torch.save(create_model(name, num_classes=4).state_dict(), path)
        options = ProfileOptions(backends=["ort-cpu"], batches=[1], warmup=1, iters=3, progress=False)
        report = profile_models(path, tmp_path / f"p_{name}", options)
        (backend,) = report["models"][0]["backends"]
        memory = backend["memory"]["1"]
        assert "memory_note" not in backend and memory["peak_mib"] >= memory["baseline_mib"]
        added[name] = memory["added_mib"]
    weights = lambda n: sum(p.numel() for p in create_model(n, num_classes=4).parameters()) * 4 / 2**20  # noqa: E731
    assert added["resnet32x4"] - added["resnet8"] >= weights("resnet32x4") - weights("resnet8")


def test_analytic_memory_of_a_hand_built_graph(tmp_path):
    """Conv(3->8, 3x3) -> Relu -> Conv(8->4, 1x1) at batch 2 on 10x10: weights and the peak of live activations by hand."""
    import onnx
    from compressor.deploy.profile.analytic import analytic_memory
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((4, 8, 1, 1), np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 10, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 10, 10])], [w1, w2])  # fmt: skip
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    got = analytic_memory(path, 2)
    x, a, b, y = 2 * 3 * 100 * 4, 2 * 8 * 100 * 4, 2 * 8 * 100 * 4, 2 * 4 * 100 * 4
    assert got["weight_bytes"] == (8 * 3 * 9 + 4 * 8) * 4
    # x and a live together (x freed after the first conv), then a and b, then b and y
    assert got["peak_activation_bytes"] == max(x + a, a + b, b + y)
    assert analytic_memory(path, 4)["peak_activation_bytes"] == 2 * got["peak_activation_bytes"]


def test_interleaved_rounds_share_a_burst_of_load():
    """A burst that lands in one round slows every configuration in that round; each configuration's
    median over rounds is unmoved and its spread shows the burst."""
    from compressor.deploy.profile.latency import interleaved_latency

    now = [0.0]
    calls = [0]

    class Timed(FakeRuntime):
        def __init__(self, ms):
            super().__init__()
            self.ms = ms

        def __call__(self, batch):
            calls[0] += 1
            busy = 5 <= calls[0] <= 8  # the second round (two configs x two calls per round)
            now[0] += (self.ms + (50 if busy else 0)) / 1000
            return super().__call__(batch)

    configs = [("a", Timed(1.0), (3, 4, 4), 1), ("b", Timed(2.0), (3, 4, 4), 1)]
    out = interleaved_latency(configs, iters=10, rounds=5, clock=lambda: now[0], settle=0, pause=0)
    assert out["a"]["round_median_ms"] == pytest.approx(1.0) and out["b"]["round_median_ms"] == pytest.approx(2.0)
    assert out["a"]["round_p90_ms"] > 10 and out["b"]["round_p90_ms"] > 10  # both saw the burst
    assert out["a"]["spread"] > 1 and out["a"]["iters"] == 10 and out["a"]["rounds"] == 5


def test_interleaved_rounds_leave_the_cost_of_switching_backends_untimed():
    """The first calls after a switch pay for the other runtime's spinning threads; settle calls absorb them."""
    from compressor.deploy.profile.latency import interleaved_latency

    now, last = [0.0], [None]

    class Switching(FakeRuntime):
        def __init__(self, ms):
            super().__init__()
            self.ms, self.warm = ms, 0

        def __call__(self, batch):
            if last[0] is not self:
                self.warm, last[0] = 0, self
            self.warm += 1
            now[0] += self.ms * (3 if self.warm <= 2 else 1) / 1000  # two slow calls after every switch
            return super().__call__(batch)

    configs = [("a", Switching(1.0), (3, 4, 4), 1), ("b", Switching(2.0), (3, 4, 4), 1)]
    slow = interleaved_latency(configs, iters=15, rounds=5, clock=lambda: now[0], settle=0, pause=0)
    settled = interleaved_latency(configs, iters=15, rounds=5, clock=lambda: now[0], settle=3, pause=0)
    assert slow["a"]["mean_ms"] > 1.5 and slow["b"]["mean_ms"] > 3.0  # switches land in the timed calls
    assert settled["a"]["p99_ms"] == pytest.approx(1.0) and settled["b"]["p99_ms"] == pytest.approx(2.0)
