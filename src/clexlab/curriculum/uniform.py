"""The CLEX paper's curriculum: t uniform in {1..t_max}, positions spread over n·t."""

from __future__ import annotations

import torch

from clexlab.curriculum.base import ScaleCurriculum, ScaleSample, step_generator


def sample_positions(seq_len: int, t: int, generator: torch.Generator) -> torch.Tensor:
    """``seq_len`` sorted distinct positions in ``[0, seq_len * t)``, first and last kept.

    With t = 1 this is ``arange(seq_len)``. Keeping 0 and ``n*t - 1`` makes
    every step see the full span of relative distances of the target window.
    """
    span = seq_len * t
    if t == 1 or seq_len <= 2:
        positions = torch.arange(seq_len, dtype=torch.long)
        if seq_len == 2:
            positions[-1] = span - 1
        return positions
    inner = torch.randperm(span - 2, generator=generator)[: seq_len - 2] + 1
    inner, _ = torch.sort(inner)
    return torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([span - 1])])


class UniformScaleCurriculum(ScaleCurriculum):
    """Draw ``t`` uniformly from ``{min_scale..max_scale}`` and positions over ``n·t``.

    Args:
        max_scale: t_max (16 in the paper).
        seed: run seed; draws depend only on ``(seed, step)``.
        min_scale: smallest t drawn (1 in the paper).
        spread_positions: draw positions over ``n*t`` (the paper); when False,
            positions stay ``0..n-1`` and only t varies (an ablation).
    """

    def __init__(self, max_scale: int, seed: int = 0, min_scale: int = 1, spread_positions: bool = True) -> None:
        if not 1 <= min_scale <= max_scale:
            raise ValueError(f"need 1 <= min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.max_scale = int(max_scale)
        self.min_scale = int(min_scale)
        self.seed = int(seed)
        self.spread_positions = bool(spread_positions)

    def sample(self, step: int, seq_len: int) -> ScaleSample:
        generator = step_generator(self.seed, step)
        t = int(torch.randint(self.min_scale, self.max_scale + 1, (1,), generator=generator))
        positions = sample_positions(seq_len, t if self.spread_positions else 1, generator)
        return ScaleSample(t=t, positions=positions)
