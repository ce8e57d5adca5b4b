"""INT8 sensitivity per layer and the float fallback, on a small network with a planted fragile layer."""

import numpy as np
import onnx
import pytest
import torch
from compressor.deploy.export.int8 import quantizable_layers, quantize_qdq
from compressor.deploy.export.onnx_export import torch_to_onnx
from compressor.deploy.export.sensitivity import (
    analyse,
    fallback,
    hint_cka,
    kernel_summary,
    kernel_times,
    make_probe,
    ranking,
    sensitivity,
    sqnr_db,
)
from torch import nn

from compressor.errors import UserError


class Planted(nn.Module):
    """conv1 -> conv2 -> conv3 -> pool -> fc. Every filter of conv3 has one weight of 1000 on an input
    channel that is always 0 (conv2's last channel, ReLU of -100): harmless in float, but with
    per-channel symmetric INT8 weights each filter's step becomes ~8 and its other weights (~0.1)
    round to zero."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            self.conv2.weight[-1].zero_()
            self.conv2.bias[-1] = -100.0
            self.conv3.weight[:, -1, 1, 1] = 1000.0
            self.fc.weight *= 30  # answers that depend on the image, not on the bias
            self.fc.bias.zero_()

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(self.conv3(x).mean((2, 3)))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    model = Planted().eval()
    rng = np.random.default_rng(0)
    images = (rng.standard_normal((96, 3, 16, 16)) + rng.normal(0, 3, (96, 3, 1, 1))).astype(np.float32)  # colours differ per image
    torch_to_onnx(model, torch.from_numpy(images[:1]), folder / "fp32.onnx", 17, True, False)
    with torch.no_grad():
        labels = model(torch.from_numpy(images)).argmax(1).numpy()  # fp32 is right on every image: drops are INT8's
    return folder, images, labels


def calibration(images):
    return lambda: iter(np.split(images[:64], 4))


def test_sqnr_of_a_known_noise():
    ref = np.ones((4, 10))
    assert sqnr_db(ref, ref) == float("inf") and sqnr_db(ref, ref + 0.1) == pytest.approx(20.0)


def test_sensitivity_finds_the_planted_layer_and_the_budget_keeps_it_float(planted, tmp_path):
    folder, images, labels = planted
    layers = quantizable_layers(folder / "fp32.onnx")
    assert [op for _, op in layers] == ["Conv", "Conv", "Conv", "Gemm"]
    probe = make_probe(folder / "fp32.onnx", images[64:], labels[64:])
    report = sensitivity(folder / "fp32.onnx", calibration(images), probe)
    by_layer = {r["layer"]: r for r in report["layers"]}
    conv3 = layers[2][0]
    assert ranking(report)[0] == conv3  # quantizing conv3's input alone does the most damage
    assert by_layer[conv3]["int8_alone"]["sqnr_db"] < min(r["int8_alone"]["sqnr_db"] for n, r in by_layer.items() if n != conv3) - 5
    assert report["full_int8"]["top1"] < 90 and by_layer[conv3]["float_alone"]["agreement"] > report["full_int8"]["agreement"]
    result = fallback(folder / "fp32.onnx", tmp_path / "fallback.onnx", calibration(images), probe, report, budget=5.0)
    assert result["float_layers"][0] == conv3 and report["fp32_top1"] - result["top1"] <= 5.0
    assert (tmp_path / "fallback.onnx").exists() and len(result["float_layers"]) <= 2
    with pytest.raises(UserError, match="not met with up to 0 layers in float"):
        fallback(folder / "fp32.onnx", tmp_path / "none.onnx", calibration(images), probe, report, budget=0.0, max_float=0)
    with pytest.raises(UserError, match=">= 0"):
        fallback(folder / "fp32.onnx", tmp_path / "neg.onnx", calibration(images), probe, report, budget=-1)


def test_the_budget_adds_to_the_layers_the_user_keeps_float(planted, tmp_path):
    folder, images, labels = planted
    fp32, probe = folder / "fp32.onnx", make_probe(folder / "fp32.onnx", images[64:], labels[64:])
    conv1, _, conv3, _ = (name for name, _ in quantizable_layers(fp32))
    report = sensitivity(fp32, calibration(images), probe)
    result = fallback(fp32, tmp_path / "f.onnx", calibration(images), probe, report, budget=5.0, forced=[conv1])
    assert result["float_layers"][:2] == [conv1, conv3] and result["tried"][0]["float_layers"] == 1  # never without conv1
    with pytest.raises(UserError, match="below the 1 layers --int8-float keeps float"):
        fallback(fp32, tmp_path / "g.onnx", calibration(images), probe, report, budget=5.0, max_float=0, forced=[conv1])


def test_hint_cka_is_linear_cka_of_the_two_models_representations(planted, tmp_path):
    folder, images, _ = planted
    fp32 = folder / "fp32.onnx"
    int8 = quantize_qdq(fp32, tmp_path / "int8.onnx", calibration(images)())
    assert [r["cka"] for r in hint_cka(fp32, fp32, ["conv1", "conv3"], images)] == pytest.approx([1.0, 1.0])
    rows = {r["point"]: r for r in hint_cka(fp32, int8, ["conv1", "conv2", "conv3", "no_such_module"], images)}
    assert set(rows) == {"conv1", "conv2", "conv3"}  # a point no node carries is left out
    assert rows["conv3"]["cka"] < rows["conv1"]["cka"] - 0.05  # the planted layer is where INT8 drifts
    # conv3's INT8 output no longer varies with the image (its weights rounded to zero): CKA is undefined there and
    # counts as 0, as for the constant layers of hint selection. conv1 (its ReLU fused into the quantizer) against a
    # transcription of linear CKA (Kornblith et al. 2019) on the spatially averaged features:
    assert rows["conv3"]["cka"] == 0.0 and rows["conv1"]["tensor"] == "/Relu_output_0"
    import onnxruntime as ort

    def run(model, name):
        model.graph.output.extend([onnx.helper.make_empty_tensor_value_info(name)])
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run([name], {"input": images})[0]

    a = run(onnx.load(str(fp32)), "/Relu_output_0")
    b = run(onnx.load(str(int8)), "/Relu_output_0_DequantizeLinear_Output")
    x, y = a.mean((2, 3)).astype(np.float64), b.mean((2, 3)).astype(np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    cka = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert rows["conv1"]["cka"] == pytest.approx(cka, abs=1e-4)


def test_tensorrt_fallback_runs_the_kept_layers_in_fp16(planted, tmp_path):
    """The tensorrt target (S8S8): the fallback layers become FP16 islands in the file (what a strongly
    typed TensorRT 11 network runs; 8.5-10 do the same with the FP16 flag), scored on that file."""
    folder, images, labels = planted
    fp32, path = folder / "fp32.onnx", tmp_path / "student.int8-trt.onnx"
    quantize_qdq(fp32, path, calibration(images)(), target="tensorrt")
    probe = make_probe(fp32, images[64:], labels[64:])
    report = analyse(fp32, path, calibration(images), probe, budget=5.0, max_float=None, target="tensorrt")
    fallen = report["fallback"]
    conv3 = quantizable_layers(fp32)[2][0]
    assert fallen["float_layers"][0] == conv3 and fallen["float_precision"] == "fp16"
    assert report["fp32_top1"] - fallen["top1"] <= 5.0  # scored on the FP16-island file itself
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.name == conv3)
    weights = {i.name: i for i in model.graph.initializer}
    assert weights[node.input[1]].data_type == onnx.TensorProto.FLOAT16 and node.output[0].endswith("_fp16")
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.name.startswith(conv3)]
    assert len(casts) == 2  # FP16 in, FP32 out
    assert (tmp_path / "student.int8-trt.sensitivity.json").exists()


def test_kernel_times_per_layer_say_where_int8_pays(planted, tmp_path):
    folder, images, _ = planted
    fp32 = folder / "fp32.onnx"
    times = kernel_times(fp32, quantize_qdq(fp32, tmp_path / "int8.onnx", calibration(images)()), images[:8])
    assert len(times) == len(quantizable_layers(fp32)) == 4 and all(a > 0 and b > 0 for a, b in times)
    rows = [{"layer": name, "fp32_us": a, "int8_us": b} for name, a, b in (("a", 10, 5), ("b", 10, 30), ("c", 20, 25))]
    assert kernel_summary({"layers": rows, "kernel_batch": 8}) == (
        "ONNX Runtime CPU kernel time of the layers at batch 8: fp32 40 µs, all INT8 60 µs (1.50x); 2 of 3 layers run slower in INT8 "
        "(the most time lost: b 3.0x, c 1.2x)."
    )


def test_the_sweep_calibrates_once(planted, tmp_path):
    """quantize_qdq's calibration cache: a second call reads the first's ranges and writes the same
    model as a calibration of its own would (the sweep's 2 x layers + 1 variants calibrate once)."""
    from compressor.deploy.export.int8 import _caches_calibration

    if not _caches_calibration():
        pytest.skip("this onnxruntime's quantize_static has no calibration_cache_path: every variant calibrates")
    folder, images, _ = planted
    fp32, ranges = folder / "fp32.onnx", tmp_path / "ranges.json"
    first = quantize_qdq(fp32, tmp_path / "a.onnx", calibration(images)(), ranges=ranges)
    assert ranges.exists()
    cached = quantize_qdq(fp32, tmp_path / "b.onnx", iter(()), ranges=ranges)  # no batches: the cache's ranges
    fresh = quantize_qdq(fp32, tmp_path / "c.onnx", calibration(images)())
    assert first.read_bytes() == cached.read_bytes() == fresh.read_bytes()


class Depthwise(nn.Module):
    """conv -> depthwise conv without a bias (nothing for ONNX Runtime's quantizer to hide the weight behind) -> conv -> fc."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.dw = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.conv3, self.fc = nn.Conv2d(16, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv3(torch.relu(self.dw(torch.relu(self.conv1(x))))).mean((2, 3)))


def test_float_fallback_layers_stay_float_in_onnx_runtime(tmp_path):
    """ONNX Runtime's WeightBiasQuantization turns a float Conv/Gemm that reads a DequantizeLinear
    into an INT8 one (per-tensor weights) unless something hides the weight; the fallback's layers
    must run as written: the optimised session computes what the unoptimised one does, and its graph
    keeps them float (and the NCHWc kernels, not the generic grouped convolution, run them)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    images = rng.standard_normal((40, 3, 12, 12)).astype(np.float32)
    torch_to_onnx(Depthwise().eval(), torch.from_numpy(images[:1]), tmp_path / "fp32.onnx", 17, True, False)
    layers = [name for name, _ in quantizable_layers(tmp_path / "fp32.onnx")]
    kept = [layers[1], layers[3]]  # the depthwise conv and the fc
    path = quantize_qdq(tmp_path / "fp32.onnx", tmp_path / "fallback.onnx", iter(np.split(images[:32], 4)), keep_float=kept)

    def session(level, optimized=None, model=path):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        if optimized:
            options.optimized_model_filepath = str(optimized)
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    written = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"input": images})[0]
    optimised = session(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, tmp_path / "opt.onnx").run(None, {"input": images})[0]
    np.testing.assert_allclose(optimised, written, rtol=1e-5, atol=1e-5 * np.abs(written).max())
    graph = onnx.load(str(tmp_path / "opt.onnx")).graph
    layers_run = sorted(n.op_type for n in graph.node if n.op_type in ("Conv", "Gemm", "QLinearConv"))
    assert layers_run == ["Conv", "Gemm", "QLinearConv", "QLinearConv"]  # the kept two float, the other two INT8

    def nchwc_convs(model, optimized):
        session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized, model)
        return [n.op_type for n in onnx.load(str(optimized)).graph.node if n.domain == "com.microsoft.nchwc"].count("Conv")

    if nchwc_convs(tmp_path / "fp32.onnx", tmp_path / "fp32_all.onnx"):  # ONNX Runtime uses NCHWc on this CPU (x86 with AVX2 or more)
        assert nchwc_convs(path, tmp_path / "all.onnx") == 1  # the depthwise layer, in NCHWc


class TinyDetector(nn.Module):
    """A one-scale YOLO-style detector (stride 4, one anchor, one class) for the exported graph's
    box decoding, with Planted's fragile layer as conv3: conv1 -> conv2 -> conv3 -> head."""

    strides = (4,)

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.body = Planted()
        self.head = nn.Conv2d(8, 6, 1)
        self.register_buffer("anchors", torch.tensor([[[8.0, 8.0]]]))
        with torch.no_grad():
            self.head.weight *= 3  # objectness that depends on the image

    def forward(self, x):
        b = self.body
        x = torch.relu(b.conv3(torch.relu(b.conv2(torch.relu(b.conv1(x))))))
        return [self.head(nn.functional.max_pool2d(x, 4))]


def test_detector_sensitivity_and_budget_are_scored_by_ap50_and_the_box_decoding_stays_float(tmp_path):
    from compressor.deploy.export.detection import DetectorExport
    from compressor.deploy.profile.accuracy import detections

    fp32 = tmp_path / "det.onnx"
    model = DetectorExport(TinyDetector().eval(), with_nms=False).eval()
    rng = np.random.default_rng(0)
    images = (rng.standard_normal((96, 3, 32, 32)) + rng.normal(0, 3, (96, 3, 1, 1))).astype(np.float32)
    torch_to_onnx(model, torch.from_numpy(images[:1]), fp32, 17, True, False)
    with torch.no_grad():
        found = detections(*(t.numpy() for t in model(torch.from_numpy(images[64:]))))
    truth = [d[d[:, 4] >= 0.3][:, [5, 0, 1, 2, 3]] for d in found]  # fp32's confident boxes are the labels: drops are INT8's
    assert sum(len(t) for t in truth) >= 20
    probe = make_probe(fp32, images[64:], truth)
    assert probe.fp32 == pytest.approx(100.0)
    report = sensitivity(fp32, calibration(images), probe)
    conv3 = quantizable_layers(fp32)[2][0]
    assert report["metric"] == "AP50" and len(report["layers"]) == 4 and ranking(report)[0] == conv3
    assert report["full_int8"]["AP50"] < 90 and report["full_int8"]["agreement"] < 90
    result = fallback(fp32, tmp_path / "fallback.onnx", calibration(images), probe, report, budget=5.0)
    assert result["float_layers"][0] == conv3 and result["AP50"] >= 95.0 and result["fp32_AP50"] == pytest.approx(100.0)
    graph = onnx.load(str(tmp_path / "fallback.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    quantized = {producer.get(n.input[0], "input") for n in graph.node if n.op_type == "QuantizeLinear"}
    assert quantized <= {"input", "Relu", "Conv", "MaxPool"}  # decoding (Sigmoid, Exp, Mul, ...) reads float
    with pytest.raises(UserError, match="AP50"):
        fallback(fp32, tmp_path / "none.onnx", calibration(images), probe, report, budget=0.0, max_float=0)
