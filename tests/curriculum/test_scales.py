"""Scale distributions: the weight on t = 1, log-uniform, continuous t, and one-line errors."""

import math

import pytest
import torch

from clexlab.curriculum import ScaleDistribution, span_of, step_generator
from clexlab.utils.errors import UserError


def _draws(dist: ScaleDistribution, n: int = 4000) -> list:
    return [dist.draw(step_generator(0, s)) for s in range(n)]


def test_p_one_forces_that_share_of_ordinary_steps():
    draws = _draws(ScaleDistribution(16, p_one=0.5))
    share = sum(t == 1 for t in draws) / len(draws)
    # P(t = 1) = 0.5 + 0.5 / 16
    assert abs(share - (0.5 + 0.5 / 16)) < 0.03
    assert ScaleDistribution(16, p_one=0.5).probabilities()[1] == pytest.approx(0.5 + 0.5 / 16)


def test_log_uniform_integers_follow_log_ratios():
    dist = ScaleDistribution(16, kind="log_uniform")
    counts = torch.bincount(torch.tensor(_draws(dist)), minlength=17)[1:] / 4000
    probs = dist.probabilities()
    assert probs[1] == pytest.approx(math.log(2) / math.log(17))
    assert sum(probs.values()) == pytest.approx(1.0)
    for t in (1, 2, 8, 16):
        assert abs(float(counts[t - 1]) - probs[t]) < 0.025
    assert counts[0] > 5 * counts[15]  # small scales far more often than the largest


@pytest.mark.parametrize("kind", ["uniform", "log_uniform"])
def test_continuous_scales_are_real_and_in_range(kind):
    draws = _draws(ScaleDistribution(8, kind=kind, continuous=True), 500)
    assert all(1 <= t <= 8 for t in draws)
    assert sum(isinstance(t, float) for t in draws) > 490
    median = sorted(draws)[250]
    assert (3.5 < median < 5.5) if kind == "uniform" else (2.2 < median < 3.5)  # log-uniform: median sqrt(8)


def test_integer_uniform_keeps_the_papers_draw():
    # The draw the default run's figures come from: one randint per step, nothing else before it.
    dist = ScaleDistribution(16)
    for s in range(100):
        expected = int(torch.randint(1, 17, (1,), generator=step_generator(3, s)))
        assert dist.draw(step_generator(3, s)) == expected


def test_span_rounds_real_scales():
    assert span_of(128, 2) == 256 and span_of(128, 1.5) == 192 and span_of(100, 1.004) == 100


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kind": "cosine"}, "curriculum.scale must be one of"),
        ({"p_one": 1.5}, "curriculum.p_one must be a probability"),
        ({"min_scale": 9}, "curriculum.min_scale must be an integer in [1, t_max = 8]"),
        ({"min_scale": 0}, "curriculum.min_scale"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ScaleDistribution(8, **kwargs)
