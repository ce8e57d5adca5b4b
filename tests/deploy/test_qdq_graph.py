"""The trainable Q/DQ graph of quantization-aware training: fake quantization against the ONNX
operators' equations (and LSQ's gradients), parity with ONNX Runtime on both INT8 targets, and the
write-back that reproduces ONNX Runtime's own quantization."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from compressor.deploy.export.int8 import quantize_qdq
from compressor.deploy.export.onnx_export import torch_to_onnx
from compressor.deploy.export.qdq_graph import QdqGraph, fake_quant, layerwise_semantics, module_path, ort_parity, weight_scale
from compressor.models import build_model, hint_points
from onnx import numpy_helper

from tests.custom_cnn import TinyResNet


def test_fake_quant_is_quantize_then_dequantize_with_lsq_gradients():
    x = torch.tensor([-1.0, -0.26, 0.1, 0.25, 0.35, 0.5, 3.0], requires_grad=True)
    s = torch.tensor(0.1, requires_grad=True)
    y = fake_quant(x, s, torch.tensor(3.0), 0, 255)
    # ONNX: q = saturate(round_half_even(x / s) + z), dq = (q - z) s; transcribed for these values
    unclipped = np.round(np.array([-10.0, -2.6, 1.0, 2.5, 3.5, 5.0, 30.0])) + 3
    q = np.clip(unclipped, 0, 255)
    assert y.detach().numpy() == pytest.approx((q - 3) * 0.1, abs=1e-6)
    y.sum().backward()
    inside = (unclipped >= 0) & (unclipped <= 255)  # the range test on the rounded value, as PyTorch's learnable fake-quant
    assert x.grad.numpy() == pytest.approx(inside.astype(float))  # straight through inside the range, 0 outside
    v = x.detach().numpy() / 0.1
    lsq = np.where(inside, np.round(v) - v, np.where(unclipped < 0, 0 - 3, 255 - 3))  # Esser et al. 2020, eq. 3
    assert s.grad.item() == pytest.approx(lsq.sum(), abs=1e-4)


def test_weight_steps_are_per_channel_symmetric():
    w = torch.tensor([[1.0, -2.54], [0.5, 0.25]])
    assert weight_scale(w, 0).flatten().tolist() == pytest.approx([2.54 / 127, 0.5 / 127])
    assert weight_scale(w, 1).flatten().tolist() == pytest.approx([1.0 / 127, 2.54 / 127])


def test_module_paths_from_the_exporters_scopes():
    assert module_path("/layer2/layer2.0/downsample/downsample.0/Conv") == "layer2.0.downsample.0"
    assert module_path("/blocks.1/blocks.1.1/conv/conv.6/Conv") == "blocks.1.1.conv.6"
    assert module_path("/block1/layer/layer.0/bn1/BatchNormalization") == "block1.layer.0.bn1"
    assert module_path("/fc/Gemm") == "fc" and module_path("/Flatten") == ""


def _quantized(model, tmp_path, target, images):
    model.eval()
    fp32, qdq = tmp_path / f"{target}.fp32.onnx", tmp_path / f"{target}.int8.onnx"
    torch_to_onnx(model, torch.from_numpy(images[:1]), fp32, 17, True, dynamo=False)
    quantize_qdq(fp32, qdq, iter([images[:32]]), target=target)
    points = [(p.name, p.stage, p.tap is not None) for p in hint_points(model)]
    return qdq, QdqGraph.from_files(fp32, qdq, points, model.classifier_name)


def _lively_resnet8():
    """resnet8 with BatchNorm statistics and a head that give O(1) logits (a fresh init gives ~1e-4)."""
    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.fc.weight.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_graph_matches_onnx_runtime_and_writes_back_its_quantization(tmp_path, target):
    images = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    qdq, graph = _quantized(_lively_resnet8(), tmp_path, target, images)
    # untouched, the write-back is ONNX Runtime's own quantization: same int8 weights, same steps
    written = graph.write_onnx(tmp_path / "written.onnx")
    theirs = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(qdq)).graph.initializer}
    ours = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(written)).graph.initializer}
    for name, value in theirs.items():
        if value.dtype == np.int8 and value.ndim > 1:  # weights: one step of disagreement at most, at exact ties
            assert np.abs(ours[name].astype(int) - value).max() <= 1 and np.mean(ours[name] != value) < 0.002, name
        elif value.dtype == np.float32:
            assert ours[name] == pytest.approx(value, rel=1e-5), name
    activations = {q.input[0] for q in onnx.load(str(qdq)).graph.node if q.op_type == "QuantizeLinear"}
    zero_points = [theirs[n.input[2]] for n in onnx.load(str(qdq)).graph.node if n.op_type == "QuantizeLinear"]
    assert activations and {z.dtype for z in zero_points} == {np.dtype(np.int8 if target == "tensorrt" else np.uint8)}
    if target == "tensorrt":
        assert all(int(z) == 0 for z in zero_points)  # symmetric
    check = ort_parity(graph, written, images)
    assert check["ok"], check
    assert (
        check["semantics"]["differing_pct"] <= 0.01 and check["semantics"]["float_max_rel_error"] < 1e-5 and check["top1_agreement"] >= 99
    )
    logits = graph.eval()(torch.from_numpy(images)).detach().numpy()
    assert logits.std() > 20 * check["logit_step"]  # the comparison is about real logits, not a few steps around zero


def test_a_users_model_trains_through_its_graph_and_stays_deployable(tmp_path):
    from compressor.models import attach_points

    torch.manual_seed(0)
    model = TinyResNet(num_classes=4)
    attach_points(model, (16, 16))
    images = np.random.default_rng(1).standard_normal((48, 3, 16, 16)).astype(np.float32)
    _, graph = _quantized(model, tmp_path, "cpu", images)
    assert len(graph.hint_point_specs) == len(hint_points(model))
    seen = {}
    hooks = [graph.points[i].register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, out)) for i in range(len(graph.points))]
    graph.train()
    optimizer = torch.optim.AdamW(graph.parameters(), lr=1e-3)
    labels = torch.randint(0, 4, (48,))
    before = [p.detach().clone() for p in graph.act_scales]
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(graph(torch.from_numpy(images)), labels) + sum(f.pow(2).mean() for f in seen.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for h in hooks:
        h.remove()
    assert len(seen) == len(graph.points) and all(f.requires_grad for f in seen.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, graph.act_scales, strict=True))  # the steps learn
    written = graph.write_onnx(tmp_path / "trained.onnx")
    check = ort_parity(graph, written, images)
    assert check["ok"], check
    session = ort.InferenceSession(str(written), providers=["CPUExecutionProvider"])
    assert {n.op_type for n in onnx.load(str(written)).graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    assert session.run(None, {"input": images[:2]})[0].shape == (2, 4)


class _Upsampler(torch.nn.Module):
    """The decoder-side operators detectors use: LeakyReLU, bilinear and nearest resizing, Exp."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        y = F.leaky_relu(self.a(x), 0.1)
        up = torch.cat([F.interpolate(y, scale_factor=2, mode="bilinear"), F.interpolate(y, scale_factor=2, mode="nearest")], 1)
        return torch.exp(0.1 * self.b(up).mean((2, 3)))


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_resizing_and_leaky_relu_match_onnx_runtime_layer_by_layer(tmp_path, target):
    images = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    model = _Upsampler().eval()
    fp32, qdq = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    torch_to_onnx(model, torch.from_numpy(images[:1]), fp32, 17, True, dynamo=False)
    quantize_qdq(fp32, qdq, iter([images]), target=target)
    ops = {n.op_type for n in onnx.load(str(qdq)).graph.node}
    assert {"Resize", "LeakyRelu", "Exp"} <= ops
    semantics = layerwise_semantics(QdqGraph.from_files(fp32, qdq), qdq, images[:4])
    assert semantics["differing_pct"] <= 1.0 and semantics["float_max_rel_error"] <= 1e-3, semantics
