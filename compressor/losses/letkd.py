"""letKD supervision (Gorgun et al., seed 003 §4.2): per-pixel soft labels from the teacher for
the matching kernels of the student's KD layers (``models.letkd``).

* penultimate layer: K-means on the teacher's penultimate pixels (a subset of the training
  set); a pixel's label is the soft assignment softmax(-||f_i - rho_k||^2 / tau) to the centres
  (the paper writes softmax(d); the negative distance is what makes near centres likely, as in
  QUEST, from which the labelling comes). The clustering-free alternative ("kernels") takes the
  soft-maxed responses of the 3x3 convolution in the teacher's final block as the labels.
* intermediate layer (letKD-2, after the first block of the last stage): LDA on the teacher's
  pixels labelled with their image's class, K-means with a small K per class on the LDA
  features (K x C sub-class centres), and the table p(h2 | h1) of how often the nearest centre
  overall (h2) is j when the nearest centre of the pixel's own class (h1) is i; a pixel's label
  is the row of h1(z_i, y).

The loss is lambda * mean over pixels of KL(p_T(i) || softmax(a_i)), a_i the student layer's
matching scores (lambda = 1). Where the two maps differ in size the larger is average-pooled.
The number of centres is not in the paper's main text: ``templates`` (default 32) and
``subclasses`` (default 2) are this toolchain's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from compressor.models.features import forward_features, hint_points
from compressor.models.letkd import attach_kd_layers

from .base import DistillLoss, LossContext, Outputs, PrepareContext


def kmeans_soft_labels(f: torch.Tensor, centres: torch.Tensor, tau: float) -> torch.Tensor:
    """(B, C, H, W) features, (K, C) centres -> (B, K, H, W) softmax(-||f - rho_k||^2 / tau)."""
    d = f.pow(2).sum(1, keepdim=True) - 2 * torch.einsum("bchw,kc->bkhw", f, centres) + centres.pow(2).sum(1)[None, :, None, None]
    return F.softmax(-d / tau, dim=1)


def subclass_labels(f: torch.Tensor, labels: torch.Tensor, lda_mean: torch.Tensor, lda_proj: torch.Tensor, centres: torch.Tensor,
                    table: torch.Tensor, per_class: int) -> torch.Tensor:  # fmt: skip
    """Intermediate-layer labels: z = LDA(f) per pixel; h1 = nearest centre among the pixel's
    class's ``per_class`` centres; the label is row h1 of the p(h2 | h1) table, (B, K*C, H, W)."""
    b, _, h, w = f.shape
    z = torch.einsum("bchw,cd->bdhw", f - lda_mean[None, :, None, None], lda_proj)
    d = (z[:, None] - centres[None, :, :, None, None]).pow(2).sum(2)  # (B, K*C, H, W)
    own = labels[:, None] * per_class + torch.arange(per_class, device=f.device)[None]  # (B, K) ids of the own class's centres
    d_own = torch.gather(d, 1, own[:, :, None, None].expand(b, per_class, h, w))
    h1 = torch.gather(own[:, :, None, None].expand(b, per_class, h, w), 1, d_own.argmin(1, keepdim=True))[:, 0]
    return table[h1].permute(0, 3, 1, 2)


@dataclass(frozen=True)
class LetKDSettings:
    """``loss.params.letkd``, read once by ``default_hints``, ``prepare`` and ``build``."""

    tau: float = 1.0  # temperature of the student's matching scores
    variant: int = 1  # 1: the penultimate layer; 2: also after the first block of the last stage
    templates: int = 32  # K-means clusters (templates) on the teacher's penultimate pixels
    subclasses: int = 2  # letKD-2: K-means sub-classes per class on the LDA features
    samples: int = 1000  # training images the supervision is fitted on
    max_pixels: int = 50_000
    supervision: str = "kmeans"  # kmeans | kernels (the teacher's 3x3 kernels as the cluster centres)
    alpha: float = 1.0  # the KD layer's residual scale
    seed: int = 0

    @classmethod
    def of(cls, params: dict) -> LetKDSettings:
        try:
            settings = cls(**params)
        except TypeError as e:
            raise ValueError(f"letkd: {e}") from None
        if settings.variant not in (1, 2):
            raise ValueError(f"letKD variant must be 1 (penultimate layer) or 2 (also an intermediate one), not {settings.variant}")
        if settings.supervision not in ("kmeans", "kernels"):
            raise ValueError(f"supervision must be kmeans or kernels, not {settings.supervision!r}")
        return settings


class LetKD(DistillLoss):
    """Supervision of the student's KD layers; see the module docstring."""

    kind = "feature"
    default_weight = 1.0

    def __init__(self, layers: list[nn.Module], supervision: list[dict], tau: float = 1.0):
        super().__init__()
        self._layers = layers  # the student's own KD layers (not registered here: they belong to the student)
        self.kinds = [s["kind"] for s in supervision]
        self._stores = [s.get("store") for s in supervision]  # kernels: the teacher's latest 3x3 responses
        self._handles = [s["handle"] for s in supervision if "handle" in s]  # the hook on the teacher's conv that fills them
        self.per_class = [int(s.get("per_class", 0)) for s in supervision]
        self.tau = tau
        for i, s in enumerate(supervision):
            for key, value in s.items():
                if isinstance(value, torch.Tensor):
                    self.register_buffer(f"s{i}_{key}", value.float())

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @classmethod
    def build(cls, ctx: LossContext, layers=None, fitted=None, **params) -> LetKD:
        """``layers`` and ``fitted`` come from ``prepare``; ``params`` are ``LetKDSettings``."""
        if layers is None or fitted is None:
            raise ValueError("letkd's KD layers and teacher supervision are prepared by the engine (run it through compressor distill)")
        return cls(layers, fitted, LetKDSettings.of(params).tau)

    @staticmethod
    def default_hints(teacher: nn.Module, student: nn.Module, params: dict) -> tuple[list[int], list[int]]:
        """letKD-1: the penultimate (last) points; letKD-2 also the first block of the last stage."""

        variant = LetKDSettings.of(params).variant

        def points(model: nn.Module, who: str) -> list[int]:
            pts = hint_points(model)
            first_of_last = next(p.index for p in pts if p.stage == pts[-1].stage)
            if variant == 2 and first_of_last == pts[-1].index:
                raise ValueError(f"letKD-2 places a layer after the first block of the last stage, but the {who}'s last stage "
                                 "has a single block; use variant 1 or give hints.teacher / hints.student")  # fmt: skip
            return ([first_of_last] if variant == 2 else []) + [pts[-1].index]

        return points(teacher, "teacher"), points(student, "student")

    @classmethod
    @torch.no_grad()
    def prepare(cls, ctx: PrepareContext) -> dict:
        """Fit the supervision on teacher features of a training subset and attach the KD layers."""
        teacher, student, dataset, params, device = ctx.teacher, ctx.student, ctx.dataset, ctx.params, ctx.device
        t_points, s_points = ctx.teacher_points, ctx.student_points
        from sklearn.cluster import KMeans
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        settings = LetKDSettings.of(params)
        templates, subclasses, samples, max_pixels = settings.templates, settings.subclasses, settings.samples, settings.max_pixels
        supervision_kind = settings.supervision
        rng = np.random.default_rng(settings.seed)
        chosen = Subset(dataset, sorted(rng.permutation(len(dataset))[: min(samples, len(dataset))].tolist()))
        feats: dict[int, list[np.ndarray]] = {p: [] for p in t_points}
        pixel_labels: dict[int, list[np.ndarray]] = {p: [] for p in t_points}
        teacher = teacher.eval().to(device)
        for images, labels, _ in DataLoader(chosen, batch_size=128):
            out, _ = forward_features(teacher, images.to(device), t_points)
            for p, f in out.items():
                feats[p].append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).cpu().numpy())
                pixel_labels[p].append(np.repeat(labels.numpy(), f.shape[2] * f.shape[3]))
        supervision = []
        penultimate = t_points[-1]
        for p in t_points:
            x = np.concatenate(feats[p])
            keep = rng.permutation(len(x))[:max_pixels]
            if p == penultimate:
                if supervision_kind == "kernels":
                    supervision.append({"kind": "kernels", "point": p})
                else:
                    km = KMeans(templates, n_init=1, random_state=0).fit(x[keep])
                    supervision.append({"kind": "kmeans", "centres": torch.from_numpy(km.cluster_centers_)})
            else:
                y = np.concatenate(pixel_labels[p])[keep]
                classes = int(y.max()) + 1
                lda = LinearDiscriminantAnalysis(n_components=min(classes - 1, x.shape[1])).fit(x[keep], y)
                z = lda.transform(x[keep])
                centres = np.zeros((classes * subclasses, z.shape[1]))
                for c in range(classes):
                    zc = z[y == c]
                    k = min(subclasses, len(zc))
                    if k == 0:
                        raise ValueError(f"class {c} has no pixels in the letKD fitting subset; raise letkd samples")
                    km = KMeans(k, n_init=1, random_state=0).fit(zc)
                    centres[c * subclasses : (c + 1) * subclasses] = km.cluster_centers_[np.arange(subclasses) % k]
                d = ((z[:, None, :] - centres[None]) ** 2).sum(-1)
                own = y[:, None] * subclasses + np.arange(subclasses)[None]
                h1 = own[np.arange(len(z)), d[np.arange(len(z))[:, None], own].argmin(1)]
                h2 = d.argmin(1)
                table = np.full((classes * subclasses, classes * subclasses), 1e-6)
                np.add.at(table, (h1, h2), 1.0)
                table /= table.sum(1, keepdims=True)
                supervision.append({"kind": "subclass", "per_class": subclasses, "lda_mean": torch.from_numpy(lda.xbar_),
                                    "lda_proj": torch.from_numpy(lda.scalings_[:, : z.shape[1]]),
                                    "centres": torch.from_numpy(centres), "table": torch.from_numpy(table)})  # fmt: skip
        if supervision[-1]["kind"] == "kernels":  # the teacher's final 3x3 conv gives the labels; its width is K
            conv, store = _last_3x3(teacher, penultimate), {}
            handle = conv.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
            supervision[-1].update(conv=conv, store=store, handle=handle)
        widths = []
        for s in supervision:
            if s["kind"] == "kmeans":
                widths.append(len(s["centres"]))
            elif s["kind"] == "subclass":
                widths.append(len(s["table"]))
            else:
                widths.append(s["conv"].out_channels)
        sample = torch.stack([dataset[i][0] for i in range(2)]).to(next(student.parameters()).device)
        s_feats, _ = forward_features(student.eval(), sample, s_points)
        attach_kd_layers(student, s_points, [f.shape[1] for f in s_feats.values()], widths, settings.alpha)
        student.train()
        return {"layers": list(student.kd_layers), "fitted": supervision}

    def labels_for(self, i: int, f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        kind = self.kinds[i]
        if kind == "kmeans":
            return kmeans_soft_labels(f, getattr(self, f"s{i}_centres"), self.tau)
        if kind == "subclass":
            g = lambda k: getattr(self, f"s{i}_{k}")  # noqa: E731
            return subclass_labels(f, labels, g("lda_mean"), g("lda_proj"), g("centres"), g("table"), self.per_class[i])
        raise AssertionError(kind)

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        total = s.logits.new_zeros(())
        for i, (layer, f) in enumerate(zip(self._layers, t.feats, strict=True)):
            with torch.no_grad():
                if self.kinds[i] == "kernels":
                    target = F.softmax(self._stores[i]["out"].float() / self.tau, dim=1)
                else:
                    target = self.labels_for(i, f.detach().float(), t.labels)
            scores = layer.scores
            if scores.shape[2] > target.shape[2]:
                scores = F.adaptive_avg_pool2d(scores, target.shape[2:])
            elif target.shape[2] > scores.shape[2]:
                target = F.adaptive_avg_pool2d(target, scores.shape[2:])
            log_p = F.log_softmax(scores, dim=1)
            total = total + (target * (target.clamp_min(1e-12).log() - log_p)).sum(1).mean()
        return total


def _last_3x3(teacher: nn.Module, point: int) -> nn.Conv2d:
    """The 3x3 convolution of the teacher's final block that plays the paper's 3x3 in 3x3-BN-ReLU-1x1
    (letKD §4.2.1): its output goes through BN-ReLU into a further convolution. A Bottleneck
    (1x1-3x3-1x1) has one 3x3, which is it; a BasicBlock (3x3-BN-ReLU-3x3-BN) has two, and the
    first is it (the second feeds the residual sum, not a ReLU)."""
    block = teacher.get_submodule(hint_points(teacher)[point - 1].name)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    if not convs:
        raise ValueError("the teacher's final block has no 3x3 convolution; use supervision: kmeans")
    return convs[-2] if len(convs) > 1 else convs[0]
