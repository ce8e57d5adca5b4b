import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from compressor.deploy.artifact import load_artifact
from compressor.deploy.errors import ParityError
from compressor.deploy.export import ExportOptions, export_artifact
from compressor.deploy.export.onnx_export import export_onnx
from compressor.deploy.profile.accuracy import predict
from compressor.deploy.runtime.ort_runtime import OrtRuntime
from compressor.deploy.runtime.torch_runtime import TorchRuntime
from compressor.models import create_model, list_classifiers, model_entry

from compressor.cli import main

DATA = "synthetic:classes=4,train=512,test=256"


@pytest.mark.parametrize("name", list_classifiers())
def test_every_zoo_classifier_exports_with_parity(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    size = (32, 32) if model_entry(name).family == "cifar" else (64, 64)
    parity = export_onnx(model, tmp_path / "m.onnx", size)
    assert parity.ok and parity.shapes == [[1, 3, *size], [3, 3, *size]]
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == 17 and not list(tmp_path.glob("*.data"))  # single file


def test_parity_failure_is_loud(tmp_path, monkeypatch):
    import compressor.deploy.export.onnx_export as mod

    model = create_model("resnet8", num_classes=3).eval()
    real_export = mod.torch_to_onnx

    def broken_export(m, *args, **kwargs):  # an exporter that gets one weight wrong
        wrong = create_model("resnet8", num_classes=3).eval()
        wrong.load_state_dict(m.state_dict())
        with torch.no_grad():
            wrong.fc.bias.add_(0.01)
        real_export(wrong, *args, **kwargs)

    monkeypatch.setattr(mod, "torch_to_onnx", broken_export)
    with pytest.raises(ParityError, match=r"max abs error 0.01, max rel error"):
        export_onnx(model, tmp_path / "m.onnx", (32, 32))
    assert not (tmp_path / "m.onnx").exists()


def test_dynamo_needs_opset_18(tmp_path):
    with pytest.raises(ValueError, match="opset >= 18"):
        export_onnx(create_model("resnet8"), tmp_path / "m.onnx", (32, 32), opset=17, dynamo=True)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert main(["distill", "--student", "resnet8", "--method", "ce", "--data", DATA, "--epochs", "3", "--batch-size", "32",
                 "--lr", "0.1", "--set", "optim.schedule=cosine", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    return out / "student.pt"


def test_int8_export_keeps_top1_agreement(tmp_path, student):
    art = load_artifact(student)
    result = export_artifact(art, tmp_path, ExportOptions(int8=True, calib=DATA, calib_samples=256), stem="student")
    q = result.info["int8"]
    assert q["top1_agreement"] >= 98.0, q
    assert activation_zero_points(result.files["int8"]) == {onnx.TensorProto.UINT8}  # U8S8: ORT's fast x86 path
    side = json.loads((tmp_path / "student.int8.json").read_text())
    assert side["precision"] == "int8" and side["int8"]["samples"] == 256 and side["arch"] == "resnet8"


def test_one_registry_names_every_exported_file_for_export_profile_and_pipeline(tmp_path, student):
    """export, profile's on-demand exports and the pipeline take file names and builders from FORMATS."""
    from compressor.deploy.export import FORMATS, wanted_formats
    from compressor.deploy.profile.backends import Exports, ProfileOptions

    assert len({FORMATS.get(n).suffix for n in FORMATS.names()}) == len(FORMATS.names())
    options = ExportOptions(int8=True, fp16=True, calib=DATA, calib_samples=32, eval_samples=32)
    assert [f.name for f in wanted_formats(options)] == ["onnx", "int8", "fp16"]
    art = load_artifact(student)
    result = export_artifact(art, tmp_path / "export", options, stem="student")
    assert result.files == {f.name: f.path(tmp_path / "export", "student") for f in wanted_formats(options)}
    exports = Exports(art, tmp_path / "profile", ProfileOptions(data=DATA, eval_samples=32))
    assert exports.get("int8") == FORMATS.get("int8").path(tmp_path / "profile", art.name) and set(exports.files) == {"onnx", "int8"}
    assert exports.info["int8"]["target"] == "cpu" and exports.get("int8") == exports.files["int8"]  # made once


def activation_zero_points(path):
    """Element types of the zero points of the QuantizeLinear nodes (activations) of a model."""
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    return {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits}


def test_int8_for_tensorrt_is_symmetric_signed(tmp_path, student):
    from compressor.deploy.export import export_int8

    art = load_artifact(student)
    export_onnx(art.model, tmp_path / "s.onnx", (32, 32))
    path, q = export_int8(
        tmp_path / "s.onnx", art, ExportOptions(calib=DATA, calib_samples=64, eval_samples=64), tmp_path / "s.trt.onnx", "tensorrt"
    )
    assert activation_zero_points(path) == {onnx.TensorProto.INT8}
    zeros = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name.endswith("zero_point")]
    assert zeros and all((z == 0).all() for z in zeros)  # symmetric: TensorRT accepts nothing else
    assert q["target"] == "tensorrt"


def test_runtime_parity_torch_vs_ort(tmp_path, student):
    art = load_artifact(student)
    export_artifact(art, tmp_path, ExportOptions(dynamic_batch=True), stem="student")
    from compressor.data import open_dataset

    data = open_dataset(DATA, "test")
    a, labels = predict(TorchRuntime(art.model), data, batch_size=64, limit=100)
    b, _ = predict(OrtRuntime(tmp_path / "student.onnx"), data, batch_size=64, limit=100)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert len(labels) == 100


def test_export_cli(tmp_path, student, capsys):
    shutil.copy(student, tmp_path / "student.pt")
    shutil.copy(student.with_suffix(".json"), tmp_path / "student.json")
    assert main(["export", str(tmp_path / "student.pt"), "--fp16", "--out", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert "parity OK" in out and (tmp_path / "exp" / "student.onnx").exists() and (tmp_path / "exp" / "student.fp16.onnx").exists()
    side = json.loads((tmp_path / "exp" / "student.json").read_text())
    assert side["opset"] == 17 and side["parity"]["ok"] and side["input_size"] == [32, 32] and side["made_by"]["method"] == "ce"
    assert main(["export", str(tmp_path / "student.pt"), "--int8", "--out", str(tmp_path / "e2")]) == 2
    assert "INT8 needs calibration data" in capsys.readouterr().err


def test_trt_export_without_tensorrt_exits_2(tmp_path, student, capsys):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here; the missing-TensorRT message cannot be shown")
    except ImportError:
        pass
    assert main(["export", str(student), "--trt", "--out", str(tmp_path / "exp")]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("nms", [False, True])
def test_detector_exports_with_or_without_nms_in_the_graph(tmp_path, nms, capsys):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model("yolov3_mobilenetv2_s", num_classes=2, input_size=(96, 128)).eval()
    for seq in model.head.heads:  # objectness up, so that boxes pass the score threshold
        seq[1].bias.data.view(3, -1)[:, 4] = 0.5
    torch.save(model.state_dict(), tmp_path / "det.pt")
    (tmp_path / "det.json").write_text(json.dumps({"arch": "yolov3_mobilenetv2_s", "num_classes": 2, "input_size": [96, 128]}))
    args = ["export", str(tmp_path / "det.pt"), "--out", str(tmp_path / "out"), "--nms-score", "0.2"] + (["--nms"] if nms else [])
    assert main(args) == 0
    assert "parity OK" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names == (["boxes", "scores", "selected"] if nms else ["boxes", "scores"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node}
    assert ("NonMaxSuppression" in ops) == nms
    boxes, scores, *selected = session.run(None, {"input": np.random.default_rng(0).normal(size=(2, 3, 96, 128)).astype(np.float32)})
    assert boxes.shape == (2, 756, 4) and scores.shape == (2, 2, 756)
    if nms:
        assert selected[0].shape[1] == 3 and len(selected[0]) > 0 and set(selected[0][:, 0]) <= {0, 1}
    sidecar = json.loads((tmp_path / "out" / "model.json").read_text())
    assert sidecar["outputs"] == names and bool(sidecar["nms"]) == nms


def _yolo_folder(root, rng):
    """images/{train,val} of squares on noise, labels/ with their YOLO rows (one image without a label file)."""
    import cv2

    for split, count in (("train", 12), ("val", 8)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 80, (96, 128, 3), dtype=np.uint8)
            x, y, w, h = int(rng.integers(0, 80)), int(rng.integers(0, 50)), int(rng.integers(20, 48)), int(rng.integers(20, 46))
            image[y : y + h, x : x + w] = 220
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), image)
            if i:
                (root / "labels" / split / f"{i}.txt").write_text(f"0 {(x + w / 2) / 128} {(y + h / 2) / 96} {w / 128} {h / 96}\n")


def test_detector_int8_is_calibrated_and_scored_by_ap50_on_a_yolo_folder(tmp_path, capsys):
    torch.manual_seed(0)
    model = create_model("yolov3_mobilenetv2_s", num_classes=1, input_size=(96, 128)).eval()
    for seq in model.head.heads:  # objectness up, so that boxes pass AP's score threshold
        seq[1].bias.data.view(3, -1)[:, 4] = 0.5
    torch.save(model.state_dict(), tmp_path / "det.pt")
    (tmp_path / "det.json").write_text(json.dumps({"arch": "yolov3_mobilenetv2_s", "num_classes": 1, "input_size": [96, 128]}))
    _yolo_folder(tmp_path / "set", np.random.default_rng(0))
    out = tmp_path / "out"
    args = ["export", str(tmp_path / "det.pt"), "--int8", "--calib-samples", "8", "--out", str(out)]
    assert main([*args, "--calib", "synthetic"]) == 2  # a classifier's dataset: nothing written
    assert "yolo:PATH" in capsys.readouterr().err and not out.exists()
    (tmp_path / "set" / "labels" / "val" / "3.txt").write_text("0 0.5 0.5 1.5 0.2\n")
    assert main([*args, "--calib", f"yolo:{tmp_path / 'set'}"]) == 2
    assert "3.txt:1: box" in capsys.readouterr().err and not out.exists()
    (tmp_path / "set" / "labels" / "val" / "3.txt").write_text("0 0.5 0.5 0.5 0.2\n")
    assert main([*args, "--calib", f"yolo:{tmp_path / 'set'}"]) == 0
    assert "INT8 (cpu): AP50" in capsys.readouterr().out
    q = json.loads((out / "model.int8.json").read_text())["int8"]
    assert q["samples"] == 8 and 0 <= q["int8_AP50"] <= 100 and q["AP50_change"] == pytest.approx(q["int8_AP50"] - q["fp32_AP50"])
    graph = onnx.load(str(out / "model.int8.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    producer = {o: n.op_type for n in graph.node for o in n.output}
    assert all(producer[c.input[0]] == "DequantizeLinear" for c in convs)  # every layer INT8, ...
    assert not {"Sigmoid", "Exp"} & {producer.get(n.input[0]) for n in graph.node if n.op_type == "QuantizeLinear"}  # decoding float
    session = OrtRuntime(out / "model.int8.onnx")
    boxes, scores = session.run_all(np.zeros((2, 3, 96, 128), np.float32))
    assert boxes.shape == (2, 756, 4) and scores.shape == (2, 1, 756)
    from compressor.deploy.export.sensitivity import hint_cka
    from compressor.models import hint_points

    points = ["model." + p.name for p in hint_points(model)]  # the exported graph's scopes: DetectorExport holds the detector as .model
    images = np.random.default_rng(1).normal(size=(8, 3, 96, 128)).astype(np.float32)
    rows = hint_cka(out / "model.onnx", out / "model.int8.onnx", points, images)
    assert [r["point"] for r in rows] == points and all(0 < r["cka"] <= 1.0 + 1e-6 for r in rows)


def test_detector_fp16_and_classifier_nms_are_refused(tmp_path, capsys):
    torch.save(create_model("yolov3_mobilenetv2_s", num_classes=1).state_dict(), tmp_path / "det.pt")
    assert main(["export", str(tmp_path / "det.pt"), "--arch", "yolov3_mobilenetv2_s", "--fp16"]) == 2
    assert "--fp16 and --dynamo are for classifiers" in capsys.readouterr().err
    torch.save(create_model("resnet8", num_classes=3).state_dict(), tmp_path / "cls.pt")
    assert main(["export", str(tmp_path / "cls.pt"), "--arch", "resnet8", "--nms"]) == 2
    assert "--nms is for detectors" in capsys.readouterr().err


def test_int8_float_keeps_the_named_layers_float(tmp_path, student, capsys):
    """--int8-float: the user's own choice of float layers (e.g. those the kernel-time line shows slower in INT8)."""
    from compressor.deploy.export.int8 import quantizable_layers

    assert main(["export", str(student), "--out", str(tmp_path / "fp32")]) == 0
    first, second = (name for name, _ in quantizable_layers(tmp_path / "fp32" / "student.onnx")[:2])
    out = tmp_path / "exp"
    argv = ["export", str(student), "--int8", "--calib", DATA, "--calib-samples", "32", "--int8-float", f"{first},{first}", "--out",
            str(out)]  # fmt: skip
    assert main(argv) == 0
    graph = onnx.load(str(out / "student.int8.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    weights = {i.name: i for i in graph.initializer}
    by_name = {n.name: n for n in graph.node}
    assert by_name[first].input[1] in weights and weights[by_name[first].input[1]].data_type == onnx.TensorProto.FLOAT  # float weight
    assert producer[by_name[second].input[1]] == "DequantizeLinear"  # the next layer INT8
    assert json.loads((out / "student.int8.json").read_text())["int8"]["float_layers_forced"] == [first]
    assert f"INT8 --int8-float: 1 layers float ({first})" in capsys.readouterr().out
    bad = ["export", str(student), "--int8", "--calib", DATA, "--int8-float", "conv9", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2
    assert "no quantizable layer named conv9" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["export", str(student), "--int8-float", first, "--out", str(tmp_path / "bad2")]) == 2
    assert "add --int8" in capsys.readouterr().err and not (tmp_path / "bad2").exists()


def test_export_int8_sensitivity_and_budget_from_the_cli(tmp_path, student, capsys):
    out = tmp_path / "exp"
    argv = ["export", str(student), "--int8", "--calib", DATA, "--calib-samples", "32", "--sensitivity", "--int8-budget", "0.5",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "student.int8.sensitivity.json").read_text())
    from compressor.deploy.export.int8 import quantizable_layers

    layers = quantizable_layers(out / "student.onnx")  # resnet8: 9 convolutions (two on shortcuts) and the classifier
    assert [r["layer"] for r in report["layers"]] == [name for name, _ in layers] and len(layers) == 10
    assert all({"agreement", "sqnr_db", "top1"} <= set(r["int8_alone"]) for r in report["layers"])
    assert report["kernel_batch"] == 8 and all(r["fp32_us"] > 0 and r["int8_us"] > 0 for r in report["layers"])  # ORT's profiler
    assert [r["point"] for r in report["hint_cka"]] == ["layer1.0", "layer2.0", "layer3.0"]  # resnet8's hint points
    assert all(0 < r["cka"] <= 1 for r in report["hint_cka"])
    side = json.loads((out / "student.int8.json").read_text())["int8"]
    fallback = side["fallback"]
    assert report["fp32_top1"] - fallback["top1"] <= 0.5 and set(fallback["latency_ms_batch8"]) == {"fp32", "int8", "fallback"}
    md = (out / "student.int8.sensitivity.md").read_text()
    assert (out / "student.int8.sensitivity.png").read_bytes()[:4] == b"\x89PNG" and "| # | layer |" in md and "| layer2.0 |" in md
    assert "INT8 kernel µs |" in md and "layers run slower in INT8" in md
    assert "INT8 fallback (0.5 points)" in capsys.readouterr().out
    assert main(["export", str(student), "--int8-budget", "-1", "--int8", "--calib", DATA, "--out", str(tmp_path / "bad")]) == 2
    assert main(["export", str(student), "--sensitivity", "--out", str(tmp_path / "bad2")]) == 2
    assert "add --int8" in capsys.readouterr().err and not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()


def test_dynamo_without_onnxscript_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from compressor.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(UserError, match=r"edge-compressor\[dynamo\]"):
        export_onnx(create_model("resnet8"), tmp_path / "m.onnx", (32, 32), opset=18, dynamo=True)
