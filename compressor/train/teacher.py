"""The frozen teacher of a distillation run: eager, compiled, or an INT8 ONNX Runtime graph.

``train.teacher_int8`` runs the teacher's forward pass as a statically quantized ONNX graph
(U8S8 Q/DQ, per-channel weights, min-max calibration on training images) on ONNX Runtime's
integer kernels (AVX-512 VNNI / AMX on x86). On a 2-core VNNI Xeon, resnet32x4 at batch 64 ran in
about 190 ms against 650 ms for fp32 ONNX Runtime and 790 ms for eager PyTorch, which takes the
resnet32x4 -> resnet8x4 AT+KD step from 1.1-1.3x (compiled fp32 teacher) to 1.6-1.8x the
reference loop's images/s (``tools/bench_distill.py``).

Departure from the papers: they distil from the fp32 teacher. The INT8 teacher is an
approximation of it, like bf16 autocast is; the run measures how close it is on held-out images
before training (top-1 agreement, relative error of logits, hint features and embedding) and
records that in the student's sidecar, so the approximation is never silent. The default is
the exact fp32 teacher.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch._inductor.config
from torch import nn

from ..losses import Outputs
from .runner import FeatureTap


class TeacherGraph(nn.Module):
    """``model`` with what the losses read as plain outputs: (logits, *hint features, embedding)."""

    def __init__(self, model: nn.Module, tap: FeatureTap):
        super().__init__()
        self.model, self.tap = model, tap

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.tap.reset()
        out = self.tap.outputs(self.model(x), None, None)
        return (out.logits, *out.feats, out.embedding)


@dataclass(frozen=True)
class Int8Check:
    """How far the INT8 teacher is from the fp32 one on held-out images (relative L2 errors)."""

    images: int
    top1_agreement: float  # fraction of images where both predict the same class
    logits_rel_err: float
    feats_rel_err: tuple[float, ...]
    embedding_rel_err: float

    def summary(self) -> str:
        feats = ", ".join(f"{e:.3f}" for e in self.feats_rel_err) or "none"
        return (f"INT8 teacher vs fp32 on {self.images} held-out images: top-1 agreement {100 * self.top1_agreement:.1f}%, "
                f"relative error of logits {self.logits_rel_err:.3f}, hint features [{feats}], "
                f"embedding {self.embedding_rel_err:.3f}")  # fmt: skip


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


class Int8Graph:
    """The teacher graph exported to ONNX, quantized on ``calibration`` batches, run by ONNX Runtime.

    ONNX Runtime gets torch's thread count and does not spin its threads between calls, so the
    student's step that follows each teacher call has the cores to itself.
    """

    def __init__(self, graph: TeacherGraph, calibration: list[torch.Tensor]):
        from compressor.deploy.export.int8 import quantize_qdq
        from compressor.deploy.export.onnx_export import torch_to_onnx
        from compressor.deploy.runtime.ort_runtime import OrtRuntime

        names = ("logits", *(f"feat{i}" for i in range(len(graph.tap.indices))), "embedding")
        with tempfile.TemporaryDirectory() as tmp:
            fp32, int8 = Path(tmp) / "teacher.onnx", Path(tmp) / "teacher.int8.onnx"
            torch_to_onnx(graph.eval(), calibration[0][:1].cpu(), fp32, 17, True, False, names)
            quantize_qdq(fp32, int8, (b.cpu().numpy() for b in calibration))
            data = int8.read_bytes()
        self.runtime = OrtRuntime(data, precision="int8", threads=torch.get_num_threads(), spin=False)  # the profiler's runtime
        self.input_size = tuple(calibration[0].shape[1:])

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        if tuple(images.shape[1:]) != self.input_size:
            raise ValueError(f"the INT8 teacher was built for {self.input_size} images, got {tuple(images.shape[1:])}")
        return [torch.from_numpy(a) for a in self.runtime.run_all(images.detach().cpu().numpy())]


def check_int8(graph: TeacherGraph, int8: Int8Graph, images: torch.Tensor) -> Int8Check:
    with torch.no_grad():
        want = [t.float() for t in graph(images)]
    got = int8(images)
    return Int8Check(
        images=len(images),
        top1_agreement=float((got[0].argmax(1) == want[0].argmax(1)).float().mean()),
        logits_rel_err=_rel_err(got[0], want[0]),
        feats_rel_err=tuple(_rel_err(g, w) for g, w in zip(got[1:-1], want[1:-1], strict=True)),
        embedding_rel_err=_rel_err(got[-1], want[-1]),
    )


class Teacher:
    """The frozen teacher: eval mode, no gradients; eager, compiled, or INT8 (see the module doc)."""

    def __init__(self, model: nn.Module, hints: list[int], preact: bool, channels_last: bool, compile_model: bool,
                 ensemble: list[nn.Module] = ()):  # fmt: skip
        self.model = model.eval().requires_grad_(False)
        # Further members of an ensemble teacher: their logits are averaged with the teacher's;
        # hint features come from the teacher alone.
        self.ensemble = [m.eval().requires_grad_(False) for m in ensemble]
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tap = FeatureTap(self.model, hints, preact)
        self.compiled = compile_model
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.int8: Int8Graph | None = None
        self.int8_check: Int8Check | None = None

    def quantize(self, calibration: list[torch.Tensor], held_out: torch.Tensor) -> Int8Check:
        """Run the forward pass as INT8 from now on (CPU only); returns its check against fp32."""
        graph = TeacherGraph(self.model, self.tap)
        self.int8 = Int8Graph(graph, calibration)
        self.int8_check = check_int8(graph, self.int8, held_out)
        return self.int8_check

    @torch.no_grad()  # not inference_mode: its tensors could not be used by the losses' autograd graph
    def __call__(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, eager: bool = False) -> Outputs:
        """The teacher's outputs; ``eager`` asks for the exact fp32 model (shape probes, reports)."""
        if self.int8 is not None and not eager:
            logits, *feats, embedding = (t.to(images.device) for t in self.int8(images))
            outputs = Outputs(logits, feats, embedding, labels, index)
        else:
            self.tap.reset()
            if eager or not self.compiled:
                logits = self.model(images)
            else:
                # Freezing lets Inductor fold BN into the convs and pre-pack weights: valid because the
                # teacher's weights never change. (Only this graph: a trained model must not be frozen.)
                with torch._inductor.config.patch(freezing=True):
                    logits = self.forward(images)
            outputs = self.tap.outputs(logits, labels, index)
        if self.ensemble:
            outputs.logits = torch.stack([outputs.logits, *(m(images) for m in self.ensemble)]).mean(0)
        return outputs

    def describe(self) -> dict | None:
        """The INT8 check for the sidecar (None for the exact teacher)."""
        return asdict(self.int8_check) if self.int8_check else None
