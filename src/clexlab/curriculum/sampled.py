"""The shape every curriculum of ``conf/curriculum/`` shares: a scale distribution plus a position scheme."""

from __future__ import annotations

import abc

import torch

from clexlab.curriculum.base import ScaleCurriculum, ScaleSample, step_generator
from clexlab.curriculum.positions import contiguous_positions
from clexlab.curriculum.scales import ScaleDistribution, span_of


class SampledCurriculum(ScaleCurriculum):
    """Draw t from a :class:`~clexlab.curriculum.scales.ScaleDistribution`, then positions from the subclass's scheme.

    The scale options (``scale``, ``continuous``, ``p_one``, ``min_scale``) are
    the same for every position scheme, so any t distribution combines with any
    scheme (``curriculum=pose curriculum.p_one=0.25``). A step drawn at t = 1,
    or any step when ``spread_positions`` is off, trains on contiguous positions.

    Args:
        max_scale: t_max (the method's own, e.g. ``clex.max_scale``).
        seed: run seed; every draw depends on ``(seed, step)`` only.
        min_scale: the smallest t drawn (1 in the paper).
        spread_positions: draw positions over ``round(n * t)`` (``train.position_sampling``);
            off: positions ``0..n-1`` and only t varies (an ablation).
        scale: ``uniform`` (the paper) or ``log_uniform``.
        continuous: draw a real t (only for methods that accept one; see
            :func:`~clexlab.curriculum.build.curriculum_from_config`).
        p_one: probability of an ordinary step (t = 1, contiguous positions).
    """

    def __init__(
        self,
        max_scale: int,
        seed: int = 0,
        min_scale: int = 1,
        spread_positions: bool = True,
        *,
        scale: str = "uniform",
        continuous: bool = False,
        p_one: float = 0.0,
    ) -> None:
        self.scales = ScaleDistribution(int(max_scale), min_scale, scale, continuous, p_one)
        self.max_scale = self.scales.max_scale
        self.min_scale = self.scales.min_scale
        self.seed = int(seed)
        self.spread_positions = bool(spread_positions)

    @property
    def continuous(self) -> bool:
        return self.scales.continuous

    def sample(self, step: int, seq_len: int) -> ScaleSample:
        generator = step_generator(self.seed, step)
        t = self.scales.draw(generator)
        if t == 1 or not self.spread_positions:
            return ScaleSample(t=t, positions=contiguous_positions(seq_len))
        return ScaleSample(t=t, positions=self.positions(seq_len, span_of(seq_len, t), generator))

    @abc.abstractmethod
    def positions(self, seq_len: int, span: int, generator: torch.Generator) -> torch.Tensor:
        """``seq_len`` sorted distinct positions in ``[0, span)`` for a step at t > 1."""

    def scheme_tag(self) -> str:
        """The position scheme's short name in method labels (empty for the paper's)."""
        return ""

    def tag(self) -> str:
        parts = [self.scheme_tag(), self.scales.tag()]
        if not self.spread_positions:
            parts = [self.scales.tag()]  # positions stay contiguous: the scheme plays no part
        return "+".join(p for p in parts if p)
