import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import top1_hits
from .base import DistillLoss, LossContext, Outputs, kl_soft


class AuxHead(nn.Module):
    """A classifier mounted on a teacher module's output (C, H, W): the thesis' head flattens the
    map into one fully connected layer (``flatten``); ``pool`` is global average pool + FC."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, kind: str = "flatten"):
        super().__init__()
        if kind not in ("flatten", "pool"):
            raise ValueError(f"head {kind!r}: flatten (the thesis') or pool")
        self.kind = kind
        features = int(torch.tensor(shape).prod()) if kind == "flatten" else shape[0]
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1) if self.kind == "flatten" else x.mean((2, 3)))


class EKD(DistillLoss):
    """EKD (Asadian's thesis, ch. 4): the frozen teacher gets an auxiliary head on the output of each of
    its stages (its hint points; stage ends by default); the heads are trained alone with
    cross-entropy in the initialisation stage (``train.init_epochs``; teacher frozen; 1/8 of the
    epochs when not given), then the cohort of K+1 classifiers (K heads + the teacher's own)
    supervises the student: L_EKD = 1/|cohort| sum_V KD_tau(S | V) (Eq. 4.6),
    L = alpha * L_EKD + (1 - alpha) * CE (Eq. 4.7; alpha = 0.1 via this term's weight and
    ``loss.gamma: 0.9``, tau = 5).

    ``reduction: mean`` (default) is the thesis' Eq. 4.6. The authors' code
    (github.com/aryanasadianuoit/Distilling-Knowledge-via-Intermediate-Classifiers, ``train_dih.py``)
    sums every member's alpha * KD + (1 - alpha) * CE instead, which is |cohort| times Eq. 4.7: the
    same optimum, but |cohort| times the gradient (with SGD, |cohort| times the learning rate and a
    weight decay |cohort| times weaker). ``reduction: sum`` sums the KD terms; with
    ``loss.gamma: |cohort| * (1 - alpha)`` (3.6 for three heads + the teacher) the total equals the
    code's loss exactly. The code also fine-tunes the heads for the full epoch count
    (``train_regular_middle_logits(..., epochs=args.epochs)``), where the thesis calls it a cheap
    fine-tuning: set ``train.init_epochs`` to ``train.epochs`` to follow it.

    Heads sit at every teacher hint point, the last stage's too (the thesis' experiments have three
    heads plus the main classifier on three-stage CIFAR teachers, Table 5.6); ``include_last: false``
    leaves the last one out. ``head: flatten`` (default) is the thesis' head, one FC layer on the
    flattened C x H x W map; ``head: pool`` averages first. ``cohort`` picks which classifiers join
    (1..K heads, K+1 the teacher; the thesis' ablation); ``heads`` loads heads trained by an earlier
    run (``ekd_heads.pt``), which makes the initialisation stage unnecessary. The engine saves the
    trained heads and their accuracy next to the student. The student's hint features are not read,
    so a student of any depth pairs with any teacher."""

    kind = "feature"  # it reads the teacher's features at the hint points
    reads_student_feats = False
    default_weight = 0.1

    def __init__(self, heads: nn.ModuleList, head_points: list[int], T: float = 5.0, cohort: list[int] | None = None,
                 trained: bool = False, reduction: str = "mean"):  # fmt: skip
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction {reduction!r}: mean (the thesis' Eq. 4.6) or sum (the authors' train_dih.py)")
        self.reduction = reduction
        self.heads = heads
        self.head_points = head_points  # positions in the hint list
        self.T = T
        members = len(heads) + 1
        self.cohort = list(cohort) if cohort else list(range(1, members + 1))
        bad = [c for c in self.cohort if not 1 <= c <= members]
        if bad or not self.cohort:
            raise ValueError(f"cohort {cohort} must name classifiers 1..{members} ({len(heads)} heads, {members} = the teacher)")
        self.needs_init = not trained
        self.register_buffer("correct", torch.zeros(len(heads), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.float64))

    @classmethod
    def build(cls, ctx: LossContext, T: float = 5.0, cohort: list[int] | None = None, heads: str | None = None,
              include_last: bool = True, head: str = "flatten", reduction: str = "mean") -> "EKD":  # fmt: skip
        points = list(range(len(ctx.teacher_feats) if include_last else max(len(ctx.teacher_feats) - 1, 0)))
        if not points:
            raise ValueError("EKD needs teacher hint points for its heads (with include_last: false, at least two)")
        modules = nn.ModuleList(AuxHead(tuple(ctx.teacher_feats[i]), ctx.num_classes, head) for i in points)
        loss = cls(modules, points, T, cohort, trained=heads is not None, reduction=reduction)
        if heads is not None:
            state = torch.load(heads, map_location="cpu", weights_only=True)
            try:
                modules.load_state_dict(state["heads"])
            except (RuntimeError, KeyError) as e:
                raise ValueError(f"heads file {heads} does not fit these hint points and classes: {e}") from None
        return loss

    def head_logits(self, t: Outputs) -> list[torch.Tensor]:
        return [head(t.feats[i].detach()) for head, i in zip(self.heads, self.head_points, strict=True)]

    def init_loss(self, s: Outputs, t: Outputs) -> torch.Tensor:
        logits = self.head_logits(t)
        with torch.no_grad():
            self.correct += torch.tensor([top1_hits(z, t.labels) for z in logits], dtype=torch.float64, device=self.correct.device)
            self.seen += len(t.labels)
        return sum(F.cross_entropy(z, t.labels) for z in logits)

    def set_epoch(self, epoch: int) -> None:
        """Accuracy is counted over the last initialisation epoch only."""
        if epoch < 0:
            self.correct.zero_()
            self.seen.zero_()

    def head_accuracy(self) -> list[float]:
        return (100 * self.correct / self.seen.clamp_min(1)).tolist()

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        with torch.no_grad():
            members = [*self.head_logits(t), t.logits.detach()]
        total = sum(kl_soft(s.logits, members[c - 1], self.T) for c in self.cohort)
        return total / len(self.cohort) if self.reduction == "mean" else total

    @torch.no_grad()
    def report(self, teacher_outputs) -> dict:
        """Top-1 (%) of every cohort member on the given teacher outputs (the eval set)."""
        correct, n = torch.zeros(len(self.heads) + 1, dtype=torch.float64), 0
        for t in teacher_outputs:
            members = [*self.head_logits(t), t.logits]
            correct += torch.tensor([top1_hits(z, t.labels) for z in members], dtype=torch.float64)
            n += len(t.labels)
        acc = (100 * correct / max(n, 1)).tolist()
        return {"head_top1": [round(a, 2) for a in acc[:-1]], "teacher_top1": round(acc[-1], 2), "cohort": self.cohort}

    def export_state(self) -> dict:
        """What the engine saves as ``ekd_heads.pt``: the heads, where they sit, their accuracy."""
        return {"heads": self.heads.state_dict(), "head_points": self.head_points, "train_top1": self.head_accuracy()}

    state_file = "ekd_heads.pt"
