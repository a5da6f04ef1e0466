"""The study's goals on a hand-made summary: each verdict follows the numbers."""

import pytest

from clexlab.utils.errors import UserError
from clexlab.workflows.curriculum_study import evaluate_goals, format_goals

L = 128
GOALS = {"ppl_margin": 0.03, "long_multiple": 16, "ratio_multiple": 8, "max_ratio": 1.4}


def _method(ppl: dict[int, tuple[float, float]], n: int = 3) -> dict:
    at_l = ppl[1][0]
    return {"runs": [f"r{i}" for i in range(n)], "lengths": {
        str(m * L): {"ppl": {"mean": mean, "std": std, "n": n}, "ratio": {"mean": mean / at_l, "std": 0.0, "n": n}}
        for m, (mean, std) in ppl.items()
    }}


SUMMARY = {
    "train_lengths": [L],
    "lengths": [L, 8 * L, 16 * L],
    "methods": {
        "none": _method({1: (3.00, 0.01), 8: (12.0, 0.5), 16: (18.0, 0.5)}),
        "yarn-x16": _method({1: (3.02, 0.01), 8: (3.9, 0.05), 16: (4.6, 0.1)}),
        # within 3 % at L, beats YaRN at 16 L, 8 L / L = 1.3: both goals
        "clex+good": _method({1: (3.05, 0.02), 8: (3.9, 0.05), 16: (4.4, 0.05)}),
        # frozen twin: worse at 16 L by more than the spread -> the learned ODE wins there
        "clex-frozen+good": _method({1: (3.06, 0.02), 8: (3.95, 0.05), 16: (4.7, 0.05)}),
        # 10 % worse at L; 8 L / L = 1.6 breaks goal 2 though 16 L is low
        "clex": _method({1: (3.30, 0.02), 8: (5.28, 0.1), 16: (4.5, 0.1)}),
        "clex-frozen": _method({1: (3.31, 0.02), 8: (5.2, 0.1), 16: (4.45, 0.1)}),
    },
}
ROWS = [
    {"label": "none", "role": "reference"},
    {"label": "yarn-x16", "role": "rival"},
    {"label": "clex", "curriculum": "uniform", "variant": "learned"},
    {"label": "clex-frozen", "curriculum": "uniform", "variant": "frozen"},
    {"label": "clex+good", "curriculum": "good", "variant": "learned"},
    {"label": "clex-frozen+good", "curriculum": "good", "variant": "frozen"},
]


def test_verdicts_follow_the_numbers():
    goals = evaluate_goals(SUMMARY, ROWS, GOALS)
    assert goals["met"]["goal1"] == ["clex+good", "clex-frozen+good"]
    assert goals["met"]["goal2"] == ["clex+good"]
    assert goals["met"]["goal1_and_2"] == ["clex+good"]
    assert goals["met"]["goal3"] == ["good"]  # 4.7 - 4.4 = 0.3 > 0.05 + 0.05 at 16 L
    uniform = next(r for r in goals["goal3"] if r["curriculum"] == "uniform")
    assert not uniform["met"] and uniform["lengths"][str(16 * L)]["delta"] == pytest.approx(-0.05)
    one = {r["label"]: r for r in goals["goal1"]}
    assert one["clex"]["excess"] == pytest.approx(0.10) and not one["clex"]["met"]
    text = format_goals(goals)
    assert "**met** by clex+good" in text and "| clex | uniform | learned | 3.300 ± 0.020 | +10.0% | not met |" in text


def test_one_seed_has_no_spread_to_beat():
    one_seed = {**SUMMARY, "methods": {k: _method({1: (3.0, 0.0), 8: (4.0, 0.0), 16: (4.4, 0.0)}, n=1)
                                       for k in SUMMARY["methods"]}}
    one_seed["methods"]["clex-frozen+good"] = _method({1: (3.0, 0.0), 8: (4.0, 0.0), 16: (9.0, 0.0)}, n=1)
    goals = evaluate_goals(one_seed, ROWS, GOALS)
    assert goals["met"]["goal3"] == []
    assert "one seed" in format_goals(goals)


def test_a_missing_reference_row_is_one_line():
    with pytest.raises(UserError, match="role: reference"):
        evaluate_goals(SUMMARY, ROWS[1:], GOALS)
