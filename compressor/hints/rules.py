"""The simple rules hint selection is judged against: which teacher points each one picks.

Each rule maps the teacher's L candidate points (1-based, forward order) to one teacher point per
student hint point; the student keeps its own points (its stage ends unless told otherwise), so
only the teacher side differs between plans, as in PURSUhInT's Table 4 (baseline vs proposed):

- ``clustered``: PURSUhInT's choice (Keser et al., §3): the centres of the k clusters of the
  teacher's layers (the plan ``select-hints`` writes).
- ``baseline``: the last point of each teacher stage (RepDistiller's and most papers' choice).
- ``uniform``: k points evenly spaced over the candidates, ``floor(j L / k + 1/2)`` for j = 1..k
  (the last is always the last point).
- ``forward``: student point s of S candidates meets the teacher point at the same relative depth,
  ``max(1, floor(s L / S + 1/2))``.
- ``reverse``: the forward points in reverse order: the student's first hint meets the teacher
  point that ``forward`` gives its last, and so on (the reverse matching of "Layer selection
  doesn't matter (much)", arXiv 2502.04499).
- ``random``: k distinct points drawn uniformly without replacement, sorted, from a generator
  seeded by the draw number (draw d always gives the same points).

On networks whose stages have equal depth (CIFAR ResNets, WRNs) with the student at its stage ends,
``uniform`` and ``forward`` coincide with ``baseline``; callers train such duplicates once.
"""

from __future__ import annotations

import math
import random

RULES = ("clustered", "baseline", "uniform", "forward", "reverse", "random")


def _round(x: float) -> int:
    return math.floor(x + 0.5)  # half up: Python's round() goes to even, which would make 4.5 and 5.5 both 4 and 6


def uniform_points(n_teacher: int, k: int) -> list[int]:
    """k evenly spaced points of 1..n_teacher, ending at the last."""
    _check(n_teacher, k)
    return [_round(j * n_teacher / k) for j in range(1, k + 1)]


def forward_points(student_points: list[int], n_student: int, n_teacher: int) -> list[int]:
    """The teacher point at the same relative depth as each student point (1-based both)."""
    _check(n_teacher, len(student_points))
    if any(not 1 <= s <= n_student for s in student_points):
        raise ValueError(f"student points {student_points} must lie in 1..{n_student}")
    return [max(1, _round(s * n_teacher / n_student)) for s in student_points]


def reverse_points(student_points: list[int], n_student: int, n_teacher: int) -> list[int]:
    """``forward_points`` in reverse order: shallow student points meet deep teacher points."""
    return forward_points(student_points, n_student, n_teacher)[::-1]


def random_points(n_teacher: int, k: int, draw: int) -> list[int]:
    """k distinct points of 1..n_teacher, sorted, the same for the same ``draw``."""
    _check(n_teacher, k)
    return sorted(random.Random(draw).sample(range(1, n_teacher + 1), k))


def _check(n_teacher: int, k: int) -> None:
    if k < 1 or n_teacher < 1:
        raise ValueError(f"need at least one point and one hint (got {n_teacher} candidates, {k} hints)")
    if k > n_teacher:
        raise ValueError(f"{k} hints cannot be distinct points of a teacher with {n_teacher} candidates")


def rule_points(rule: str, *, clustered: list[int], baseline: list[int], student_points: list[int], n_student: int,
                n_teacher: int, draw: int = 0) -> list[int]:  # fmt: skip
    """The teacher points ``rule`` pairs with ``student_points`` (one per student point).

    Raises:
        ValueError: an unknown rule, or a plan whose length differs from the student's points.
    """
    k = len(student_points)
    if rule == "clustered":
        points = list(clustered)
    elif rule == "baseline":
        points = list(baseline)
    elif rule == "uniform":
        points = uniform_points(n_teacher, k)
    elif rule == "forward":
        points = forward_points(student_points, n_student, n_teacher)
    elif rule == "reverse":
        points = reverse_points(student_points, n_student, n_teacher)
    elif rule == "random":
        points = random_points(n_teacher, k, draw)
    else:
        raise ValueError(f"unknown hint rule {rule!r}; known: {', '.join(RULES)}")
    if len(points) != k:
        raise ValueError(f"the {rule} plan has {len(points)} teacher points {points} for {k} student points {student_points}; "
                         f"select k = {k} hints (hints.k) or name {len(points)} student points (hints.student)")  # fmt: skip
    return points
