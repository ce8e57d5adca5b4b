import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, LossContext, Outputs, kl_soft


class AuxHead(nn.Module):
    """A cheap classifier mounted on a teacher module's output: global average pool + FC."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class EKD(DistillLoss):
    """EKD (seed 002 ch. 4): the frozen teacher, split into K+1 modules at its hint points (stage
    ends by default), gets a pool+FC head after each of the first K modules; the heads are
    trained alone with cross-entropy in the initialisation stage (``train.init_epochs``; teacher
    frozen), then the cohort of K+1 classifiers (K heads + the teacher's own) supervises the
    student: L_EKD = 1/|cohort| sum_V KD_tau(S | V), L = alpha * L_EKD + (1 - alpha) * CE
    (paper: alpha = 0.1 via this term's weight and ``loss.gamma: 0.9``, tau = 5).

    Heads sit at every teacher hint point except the teacher's last point (whose classifier is
    the teacher's own). ``cohort`` picks which classifiers join (1..K heads, K+1 the teacher; the
    paper's ablation); ``heads`` loads heads trained by an earlier run (``ekd_heads.pt``), which
    makes the initialisation stage unnecessary. The engine saves the trained heads and their
    accuracy next to the student. Student hint features are not used by this method."""

    kind = "feature"  # it reads the teacher's features at the hint points
    default_weight = 0.1

    def __init__(self, heads: nn.ModuleList, head_points: list[int], T: float = 5.0, cohort: list[int] | None = None,
                 trained: bool = False):  # fmt: skip
        super().__init__()
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}")
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
              include_last: bool = False) -> "EKD":  # fmt: skip
        points = list(range(len(ctx.teacher_feats) if include_last else max(len(ctx.teacher_feats) - 1, 0)))
        if not points:
            raise ValueError("EKD needs at least two teacher hint points (heads go on all but the last)")
        modules = nn.ModuleList(AuxHead(ctx.teacher_feats[i][0], ctx.num_classes) for i in points)
        loss = cls(modules, points, T, cohort, trained=heads is not None)
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
            self.correct += torch.stack([(z.argmax(1) == t.labels).sum() for z in logits]).double()
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
        return sum(kl_soft(s.logits, members[c - 1], self.T) for c in self.cohort) / len(self.cohort)

    @torch.no_grad()
    def report(self, teacher_outputs) -> dict:
        """Top-1 (%) of every cohort member on the given teacher outputs (the eval set)."""
        correct, n = torch.zeros(len(self.heads) + 1, dtype=torch.float64), 0
        for t in teacher_outputs:
            members = [*self.head_logits(t), t.logits]
            correct += torch.tensor([float((z.argmax(1) == t.labels).sum()) for z in members], dtype=torch.float64)
            n += len(t.labels)
        acc = (100 * correct / max(n, 1)).tolist()
        return {"head_top1": [round(a, 2) for a in acc[:-1]], "teacher_top1": round(acc[-1], 2), "cohort": self.cohort}

    def export_state(self) -> dict:
        """What the engine saves as ``ekd_heads.pt``: the heads, where they sit, their accuracy."""
        return {"heads": self.heads.state_dict(), "head_points": self.head_points, "train_top1": self.head_accuracy()}

    state_file = "ekd_heads.pt"
