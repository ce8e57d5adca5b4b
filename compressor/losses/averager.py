import torch
import torch.nn.functional as F
from torch import nn

from compressor.models.features import baseline_hints, feature_hooks, hint_points

from ..metrics import top1_hits
from .base import DistillLoss, LossContext, Outputs, PrepareContext
from .ekd import AuxHead


def class_mean_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Thesis 000 eq. 4.4: each sample's teacher logits replaced by the mean of the teacher logits
    of the samples with the same label in the batch, z^_y = 1/N_y sum_{x: label y} z_x."""
    classes = int(labels.max()) + 1 if labels.numel() else 0
    sums = logits.new_zeros(classes, logits.shape[1]).index_add_(0, labels, logits)
    counts = torch.bincount(labels, minlength=classes).clamp_min(1).to(logits.dtype)
    return (sums / counts[:, None])[labels]


class Averager(DistillLoss):
    """Averager student (thesis 000 ch. 4): distil from the per-label batch means of the teacher's
    logits instead of each sample's own, which removes the misleading extra peaks an
    undistillable ("nasty") teacher puts into individual responses. Works with any logit method
    (``base``: kd by default, or skd, wsl, dkd with their own parameters).

    Eq. 4.3 writes the student's loss as the distillation term alone; here, as for every method
    (001 eq. 8), the engine adds gamma * CE with the true labels (``loss.gamma``, 1 by default);
    ``loss.gamma: 0`` gives eq. 4.3 exactly.

    **The "-Ens" columns** of Tables 4.1/4.2 follow the ensemble scenario of the prior work the
    thesis borrows its setup from (Kundu et al. 2021, the skeptical student): a multi-exit
    student, whose prediction is the average of its own exits. ``exits: true`` builds it: an
    auxiliary classifier on each stage output of the student but the last (``exit_head: pool``,
    global average pool + FC, by default; ``flatten`` as EKD's head), each trained with
    cross-entropy plus this same averaged-teacher term; the main classifier is trained as without
    exits. The run reports every exit's top-1, the student's and the ensemble's (mean of the main
    and exit logits) and saves the exits (``averager_exits.pt``); the exported student is the
    single-exit network. The exits' hooks stay on the student for the run and are removed when it
    ends (``close``). The thesis does not describe the exits' architecture; the pool + FC head
    is our choice. ``teacher.ensemble`` (several teachers' logits averaged first) is a different,
    multi-teacher option of this tool, not the thesis' "Ens"."""

    kind = "logit"
    default_weight = 1.0
    state_file = "averager_exits.pt"

    def __init__(self, base: DistillLoss, exits: nn.ModuleList | None = None, student: nn.Module | None = None,
                 exit_points: list[int] | None = None):  # fmt: skip
        super().__init__()
        self.base = base
        self.exits = exits if exits is not None else nn.ModuleList()
        self.exit_points = list(exit_points or [])
        self._student = student  # the engine's student (not registered here): its exits' features are captured by hooks
        self._captured: dict[int, torch.Tensor] = {}
        self._hooks = None
        if self.exits:
            self._hooks = feature_hooks(student, self.exit_points, self._captured.__setitem__)
            self._hooks.__enter__()

    @classmethod
    def build(cls, ctx: LossContext, base: str = "kd", exits: bool = False, exit_head: str = "pool", student=None,
              exit_shapes=None, exit_points=None, exit_names=None, **base_params) -> "Averager":  # fmt: skip
        from . import LOSSES

        base_cls = LOSSES.get(base)
        if base_cls.kind != "logit" or base_cls is cls:
            raise ValueError(f"averager needs a logit method as base (kd, skd, wsl, dkd), not {base!r}")
        term = base_cls.build(ctx, **base_params)
        if not exits:
            return cls(term)
        if student is None:
            raise ValueError("exits: true needs the student network (the distill engine passes it)")
        heads = nn.ModuleList(AuxHead(tuple(shape), ctx.num_classes, exit_head) for shape in exit_shapes)
        loss = cls(term, heads, student, exit_points)
        loss.exit_names = list(exit_names or [])
        return loss

    @classmethod
    def prepare(cls, ctx: PrepareContext) -> dict:
        """With ``exits``: the student's stage outputs but the last, and their shapes (one dry run)."""
        if not ctx.params.get("exits"):
            return {}
        student, dataset, device = ctx.student, ctx.dataset, ctx.device
        points = baseline_hints(student)[:-1]
        if not points:
            raise ValueError(f"exits: true needs a student with two or more stages; {type(student).__name__} has one")
        shapes: dict[int, tuple[int, ...]] = {}
        was = student.training
        student.eval()
        with torch.no_grad(), feature_hooks(student, points, lambda i, f: shapes.__setitem__(i, tuple(f.shape[1:]))):
            student(dataset[0][0][None].to(device))
        student.train(was)
        names = {p.index: p.name for p in hint_points(student)}
        return {"student": student, "exit_points": points, "exit_shapes": [shapes[i] for i in points],
                "exit_names": [names[i] for i in points]}  # fmt: skip

    def exit_logits(self) -> list[torch.Tensor]:
        return [head(self._captured[i]) for head, i in zip(self.exits, self.exit_points, strict=True)]

    def forward(self, s: Outputs, t: Outputs) -> torch.Tensor:
        averaged = Outputs(class_mean_logits(t.logits.detach(), s.labels), t.feats, t.embedding, t.labels, t.index)
        loss = self.base(s, averaged)
        for z in self.exit_logits():  # the skeptical student's exits: CE + the same distillation term
            exit_out = Outputs(z, s.feats, s.embedding, s.labels, s.index)
            loss = loss + self.base(exit_out, averaged) + F.cross_entropy(z, s.labels)
        return loss

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    @torch.no_grad()
    def report(self, teacher_outputs) -> dict | None:
        """Top-1 (%) of each exit, of the student's own classifier and of their ensemble (mean of
        all logits) on the eval set; None without exits."""
        if not self.exits:
            return None
        student, was = self._student, self._student.training
        student.eval()
        correct, n = torch.zeros(len(self.exits) + 2, dtype=torch.float64), 0
        for t in teacher_outputs:
            main = student(t.inputs).float()
            members = [*self.exit_logits(), main]
            members.append(torch.stack(members).mean(0))
            correct += torch.tensor([top1_hits(z, t.labels) for z in members], dtype=torch.float64)
            n += len(t.labels)
        student.train(was)
        acc = [round(a, 2) for a in (100 * correct / max(n, 1)).tolist()]
        return {
            "exit_top1": acc[:-2],
            "student_top1": acc[-2],
            "ensemble_top1": acc[-1],
            "exit_points": self.exit_points,
            "exit_names": getattr(self, "exit_names", []),
        }

    def close(self) -> None:
        if self._hooks is not None:  # the student leaves without our hooks
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def export_state(self) -> dict:
        return {"exits": self.exits.state_dict(), "exit_points": self.exit_points}
