"""Scale distributions: how a curriculum draws the scale t of a training step.

Three choices, each orthogonal to the position scheme (see
:mod:`clexlab.curriculum.positions`):

* ``kind``: ``uniform`` (the CLEX paper: every t in ``[t_min, t_max]`` equally
  likely) or ``log_uniform`` (``log t`` uniform: small scales, whose windows
  look most like the evaluation at L, are drawn more often);
* ``continuous``: draw a real t instead of an integer (only for methods whose
  frequencies accept one, i.e. CLEX; the positions' span is ``round(n * t)``);
* ``p_one``: a weight on t = 1: with this probability the step is ordinary
  training (t = 1, contiguous positions) whatever the distribution says.
"""

from __future__ import annotations

import math

import torch

from clexlab.utils.errors import UserError

KINDS = ("uniform", "log_uniform")


def span_of(seq_len: int, t: float) -> int:
    """The window ``n * t`` a step's positions are drawn from, rounded to an integer (at least ``n``)."""
    return max(round(seq_len * float(t)), int(seq_len))


class ScaleDistribution:
    """Draws one scale t per step from a :class:`torch.Generator`.

    Args:
        max_scale: t_max (the method's own, e.g. ``clex.max_scale``).
        min_scale: the smallest t drawn (1 in the paper); an integer.
        kind: ``uniform`` or ``log_uniform``.
        continuous: draw a real t in ``[min_scale, max_scale]`` instead of an integer.
        p_one: probability of forcing t = 1 (in ``[0, 1]``).

    Raises:
        UserError: an option out of range (one line naming the ``curriculum.*`` key).
    """

    def __init__(
        self, max_scale: int, min_scale: int = 1, kind: str = "uniform", continuous: bool = False, p_one: float = 0.0
    ) -> None:
        if kind not in KINDS:
            raise UserError(f"curriculum.scale must be one of {list(KINDS)}, got {kind!r}")
        if isinstance(min_scale, bool) or not isinstance(min_scale, int) or not 1 <= min_scale <= int(max_scale):
            raise UserError(f"curriculum.min_scale must be an integer in [1, t_max = {max_scale}], got {min_scale!r}")
        if isinstance(p_one, bool) or not isinstance(p_one, (int, float)) or not 0.0 <= p_one <= 1.0:
            raise UserError(f"curriculum.p_one must be a probability in [0, 1], got {p_one!r}")
        self.max_scale = int(max_scale)
        self.min_scale = int(min_scale)
        self.kind = kind
        self.continuous = bool(continuous)
        self.p_one = float(p_one)

    def draw(self, generator: torch.Generator) -> int | float:
        """One t: an ``int``, or a ``float`` when continuous (then exactly ``1`` only through ``p_one``)."""
        # p_one = 0 consumes no random number, so the paper's curriculum draws exactly what it always drew.
        if self.p_one > 0 and float(torch.rand((), generator=generator)) < self.p_one:
            return 1
        lo, hi = self.min_scale, self.max_scale
        if self.kind == "uniform" and not self.continuous:
            return int(torch.randint(lo, hi + 1, (1,), generator=generator))
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if self.kind == "uniform":  # continuous
            return _as_scale(lo + u * (hi - lo))
        if self.continuous:  # log t uniform on [log lo, log hi]
            return _as_scale(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
        # Integer log-uniform: floor of a log-uniform real on [lo, hi + 1), so P(t) ∝ log((t + 1) / t).
        t = int(math.exp(math.log(lo) + u * (math.log(hi + 1) - math.log(lo))))
        return min(max(t, lo), hi)

    def probabilities(self) -> dict[int, float]:
        """P(t) of the integer distribution (for tests and the README); continuous kinds have none."""
        if self.continuous:
            raise ValueError("a continuous distribution has a density, not integer probabilities")
        ts = range(self.min_scale, self.max_scale + 1)
        if self.kind == "uniform":
            base = {t: 1.0 / len(ts) for t in ts}
        else:
            norm = math.log(self.max_scale + 1) - math.log(self.min_scale)
            base = {t: (math.log(t + 1) - math.log(t)) / norm for t in ts}
        probs = {t: (1.0 - self.p_one) * p for t, p in base.items()}
        probs[1] = probs.get(1, 0.0) + self.p_one
        return probs

    def tag(self) -> str:
        """A short name of what differs from the paper's uniform integer t (empty when nothing does)."""
        parts = []
        if self.kind == "log_uniform":
            parts.append("logt")
        if self.continuous:
            parts.append("realt")
        if self.min_scale != 1:
            parts.append(f"tmin{self.min_scale}")
        if self.p_one > 0:
            parts.append(f"one{self.p_one:g}")
        return "+".join(parts)


def _as_scale(t: float) -> int | float:
    """A drawn real t: an ``int`` when it lands on one (so ``t == 1`` checks and logs stay exact)."""
    return int(t) if float(t).is_integer() else float(t)
