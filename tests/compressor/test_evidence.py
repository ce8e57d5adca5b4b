"""Paired differences over seeds, the hint rules the ablation compares, and the report's recommendation."""

import math

import pytest

from compressor.evidence import better_than_distilled, describe_difference, mean_std, paired_difference
from compressor.hints.rules import forward_points, random_points, reverse_points, rule_points, uniform_points
from compressor.report import pareto, recommend, speed_lines


def test_paired_difference_equals_the_t_interval_by_hand():
    # diffs 1, 2, 3: mean 2, sample std 1, t_{0.975, 2} = 4.302652729749464 (tables)
    d = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302652729749464 / math.sqrt(3)
    assert d["mean"] == pytest.approx(2.0) and d["std"] == pytest.approx(1.0) and d["n"] == 3
    assert (d["low"], d["high"]) == pytest.approx((2 - half, 2 + half), abs=1e-9)


def test_pairing_is_by_seed_not_by_pooled_means():
    # the same means, but b follows a seed by seed: paired, the difference is exactly 1 with no spread
    a, b = [50.0, 60.0, 70.0], [49.0, 59.0, 69.0]
    d = paired_difference(a, b)
    assert d["std"] == pytest.approx(0.0) and d["low"] == pytest.approx(1.0) and d["high"] == pytest.approx(1.0)


def test_one_seed_has_no_interval_and_lengths_must_match():
    d = paired_difference([71.0], [70.0])
    assert d["mean"] == pytest.approx(1.0) and d["low"] is None and d["std"] is None
    assert "one seed" in describe_difference(d)
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_difference([], [])
    assert mean_std([3.0]) == {"mean": 3.0, "std": None, "n": 1}


def test_an_interval_holding_zero_is_called_seed_noise():
    noisy = paired_difference([71.0, 69.0, 72.0], [70.0, 70.0, 70.0])
    assert noisy["low"] < 0 < noisy["high"]
    assert "within seed noise" in describe_difference(noisy)
    clear = paired_difference([72.0, 72.5, 73.0], [70.0, 70.0, 70.0])
    assert clear["low"] > 0 and "noise" not in describe_difference(clear)
    assert describe_difference(clear).startswith("+2.5 top-1")


def test_a_comparison_overrules_the_distilled_student_only_beyond_seed_noise():
    def entry(distilled, other):
        return {"trained": True, "distill_minus_this": paired_difference(distilled, other)}

    def report(**entries):
        return {"comparisons": entries}

    assert better_than_distilled(None) is None and better_than_distilled(report()) is None
    assert better_than_distilled(report(vanilla=entry([80, 81, 82], [82, 83, 84]))) == "vanilla"  # -2 every seed: interval [-2, -2]
    assert better_than_distilled(report(vanilla=entry([80, 81, 82], [79, 83, 84]))) is None  # the interval holds 0
    assert better_than_distilled(report(vanilla=entry([80], [90]))) is None  # one seed: no interval, no verdict
    assert better_than_distilled(report(vanilla=entry([80, 81, 82], [79, 80, 81]))) is None  # distillation helped
    assert better_than_distilled(report(vanilla={"trained": False, "reason": "x"})) is None
    both = report(vanilla=entry([80, 81, 82], [81, 82, 83]), **{"baseline-hints": entry([80, 81, 82], [83, 84, 85])})
    assert better_than_distilled(both) == "baseline-hints"  # the larger deficit
    # an interval ending exactly at 0 is not beyond noise: [-2, 0]
    tied = {"trained": True, "distill_minus_this": {"mean": -1.0, "low": -2.0, "high": 0.0}}
    assert better_than_distilled(report(vanilla=tied)) is None


def test_rules_on_a_resnet110_sized_teacher():
    assert uniform_points(54, 3) == [18, 36, 54]
    assert uniform_points(9, 3) == [3, 6, 9]
    assert uniform_points(10, 4) == [3, 5, 8, 10]  # 2.5 and 7.5 round half up (round() would give 2 and 8)
    assert uniform_points(5, 1) == [5]
    assert forward_points([3, 6, 9], 9, 54) == [18, 36, 54]
    assert forward_points([2, 4], 5, 9) == [4, 7]  # 3.6 -> 4, 7.2 -> 7
    assert forward_points([1], 20, 3) == [1]  # never below the first point (0.15 rounds to 0)
    assert reverse_points([2, 4], 5, 9) == [7, 4]


def test_random_draws_are_distinct_sorted_and_reproducible():
    draws = [random_points(54, 3, d) for d in range(1, 6)]
    assert all(p == sorted(set(p)) and len(p) == 3 and 1 <= p[0] and p[-1] <= 54 for p in draws)
    assert draws == [random_points(54, 3, d) for d in range(1, 6)]
    assert len({tuple(p) for p in draws}) > 1
    assert random_points(3, 3, 7) == [1, 2, 3]  # as many hints as points: all of them
    with pytest.raises(ValueError, match="cannot be distinct"):
        random_points(2, 3, 0)


def test_rule_points_checks_the_plan_against_the_student():
    common = {"clustered": [4, 11, 17], "baseline": [6, 12, 18], "student_points": [1, 2, 3], "n_student": 3, "n_teacher": 18}
    assert rule_points("clustered", **common) == [4, 11, 17]
    assert rule_points("baseline", **common) == [6, 12, 18]
    assert rule_points("reverse", **common) == [18, 12, 6]
    with pytest.raises(ValueError, match="unknown hint rule 'middle'"):
        rule_points("middle", **common)
    with pytest.raises(ValueError, match="2 teacher points"):
        rule_points("clustered", **{**common, "clustered": [4, 11]})


A = {"latency_ms": 1.0, "top1": 90.0}
B = {"latency_ms": 2.0, "top1": 95.0}
C = {"latency_ms": 3.0, "top1": 94.0}  # slower and less accurate than B


def test_pareto_set_and_recommendation():
    assert pareto([C, B, A]) == [A, B]
    assert pareto([A]) == [A]
    assert recommend([A, B, C], budget_ms=1.5) is A
    assert recommend([A, B, C], budget_ms=2.0) is B  # a latency equal to the budget is within it
    assert recommend([A, B, C], budget_ms=0.5) is None
    assert recommend([A, B, C], budget_ms=None) is B  # A is 5 points below the best
    near = {"latency_ms": 1.5, "top1": 94.0}  # within 1 point of the best, faster than B
    assert recommend([A, B, C, near], budget_ms=None) is near


def _profile(student_spread: float, speedup: float = 2.0) -> dict:
    lat = lambda spread, ms: [{"batch": 1, "round_median_ms": ms, "spread": spread}]  # noqa: E731
    return {
        "settings": {},
        "models": [
            {"name": "r8", "backends": [{"backend": "ort-cpu", "latency": lat(student_spread, 1.0)}]},
            {"name": "r20", "backends": [{"backend": "ort-cpu", "latency": lat(0.1, speedup)}]},
        ],
        "comparison": [
            {
                "backend": "ort-cpu",
                "batch": 1,
                "student": "r8",
                "teacher": "r20",
                "speedup": speedup,
                "compression_ratio": 0.7,
                "student_top1": 90.0,
                "teacher_top1": 91.0,
            }
        ],
    }


def test_a_noisy_latency_is_never_a_headline():
    (line,) = speed_lines(_profile(6.67, speedup=0.5))
    assert "unreliable" in line and "667%" in line and "faster" not in line and "slower" not in line
    (line,) = speed_lines(_profile(0.25))  # exactly at the warning threshold: still used
    assert line.startswith("r8 student: 2.0x faster than r20")
    (line,) = speed_lines(_profile(0.1, speedup=0.5))
    assert "2.0x slower" in line


def test_training_curves_show_each_term_as_weighted_into_the_total():
    from compressor.report import _curve, plot_training

    row = {"epoch": 1, "weights": {"ce": 1.0, "at": 1000.0, "kd": 0.9}, "train": {"loss": 0.906, "ce": 0.4, "at": 4.4e-4, "kd": 0.073,
                                                                                "seconds": 3.0}, "eval": {"top1": 80.0}}  # fmt: skip
    losses, top1 = _curve(row, weighted=True)
    assert losses == pytest.approx({"loss": 0.906, "ce": 0.4, "at": 0.44, "kd": 0.0657}) and top1 == 80.0
    assert losses["ce"] + losses["at"] + losses["kd"] == pytest.approx(losses["loss"], abs=1e-3)  # the terms add up to the total
    assert _curve(row)[0]["at"] == pytest.approx(4.4e-4)  # unweighted where asked (the text's last values)
    assert plot_training({"student": [row]}, teacher_score=90.0)[:4] == b"\x89PNG"
