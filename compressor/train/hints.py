"""Which teacher points are paired with which student points."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compressor.models import canonical_reference, check_indices
from compressor.models.features import baseline_hints, hint_points, match_student_points, require_points, without_preact

from ..errors import UserError
from ..hints import HintPlan
from .config import HintsConfig


@dataclass(frozen=True)
class HintPairs:
    teacher: list[int]  # 1-based teacher points
    student: list[int]  # 1-based student points, paired in order
    preact: bool
    source: str  # where the teacher points came from
    notes: tuple[str, ...] = ()


def check_indices_or_fail(indices: list[int], model: nn.Module) -> None:
    try:
        check_indices(indices, len(hint_points(model)))
    except ValueError as e:
        raise UserError(f"hints: {e}") from None


def resolve_hints(cfg: HintsConfig, teacher: nn.Module, teacher_arch: str, teacher_digest: str, student: nn.Module,
                  method_default: tuple[list[int], list[int]] | None = None, student_side: bool = True) -> HintPairs:  # fmt: skip
    """Teacher points from explicit indices, a plan, the method's own placement (letKD), or the
    baseline (in that order of precedence); student points explicit, the method's, or its stage
    ends; both lists must have the same length. ``student_side=False``: the method reads only the
    teacher's features (EKD), so no student points are taken."""
    notes = []
    try:
        require_points(teacher, "the teacher")
        if student_side:
            require_points(student, "the student")
    except ValueError as e:
        raise UserError(f"hints: {e}; name its points (--teacher-points / --student-points GLOBS)") from None
    plan = HintPlan.load(cfg.plan) if cfg.plan else None
    if plan is not None:
        if canonical_reference(plan.teacher_arch) != canonical_reference(teacher_arch):  # older plans kept relative file references
            raise UserError(
                f"hint plan {cfg.plan} was made for {plan.teacher_arch!r} but the teacher is {teacher_arch!r}; "
                "run select-hints on this teacher"
            )
        if plan.teacher_digest and plan.teacher_digest != teacher_digest:
            notes.append(f"hint plan {cfg.plan} was made from another checkpoint of {teacher_arch}; its positions are used as they are")
    if isinstance(cfg.teacher, list):
        t_idx, source = list(cfg.teacher), "explicit"
    elif cfg.teacher is None and plan is not None:
        t_idx, source = list(plan.hints), f"plan {cfg.plan}"
    elif method_default is not None and cfg.teacher != "baseline":
        t_idx, source = list(method_default[0]), "the method's placement"
    else:
        t_idx, source = baseline_hints(teacher), "baseline (stage ends)"
    if not student_side:
        check_indices_or_fail(t_idx, teacher)
        preact = cfg.preact if cfg.preact is not None else (plan.preact if plan is not None else False)
        return HintPairs(t_idx, [], preact, source, tuple(notes))
    if cfg.student:
        s_idx = list(cfg.student)
    else:
        s_idx = list(method_default[1]) if method_default is not None and source == "the method's placement" else baseline_hints(student)
    try:
        check_indices(t_idx, len(hint_points(teacher)))
        check_indices(s_idx, len(hint_points(student)))
    except ValueError as e:
        raise UserError(f"hints: {e}") from None
    if len(t_idx) != len(s_idx) and not cfg.student and len(t_idx) <= len(hint_points(student)):
        ends, s_idx = s_idx, match_student_points(teacher, student, t_idx)
        notes.append(f"hints: the student's {len(ends)} stage ends {ends} do not pair with {len(t_idx)} teacher hints {t_idx}; "
                     f"student points {s_idx} sit at the same relative depth of the same stage (hints.student chooses others)")  # fmt: skip
    if len(t_idx) != len(s_idx):
        raise UserError(
            f"hints: {len(t_idx)} teacher points {t_idx} ({source}) but {len(s_idx)} student points {s_idx}; "
            f"set hints.student to {len(t_idx)} student indices (it has {len(hint_points(student))} candidates), or select "
            f"{len(s_idx)} teacher hints (select-hints --k {len(s_idx)}; hints.k: {len(s_idx)} in a pipeline config)"
        )
    preact = cfg.preact if cfg.preact is not None else (plan.preact if plan is not None else False)
    if preact:
        for who, model, idx in (("teacher", teacher, t_idx), ("student", student, s_idx)):
            if missing := without_preact(model, idx):
                notes.append(f"hints.preact: {who} points {missing} have no pre-activation of their own (a final activation shared "
                             "with other blocks, or none); their hint is the block output")  # fmt: skip
    return HintPairs(t_idx, s_idx, preact, source, tuple(notes))
