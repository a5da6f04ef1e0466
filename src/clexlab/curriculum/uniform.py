"""The CLEX paper's curriculum (RandomPos positions): t uniform in {1..t_max}, positions anywhere in n·t."""

from __future__ import annotations

import torch

from clexlab.curriculum.positions import random_positions
from clexlab.curriculum.sampled import SampledCurriculum


def sample_positions(seq_len: int, t: int, generator: torch.Generator) -> torch.Tensor:
    """``seq_len`` sorted distinct positions in ``[0, seq_len * t)``, first and last kept.

    With t = 1 this is ``arange(seq_len)``. Keeping 0 and ``n*t - 1`` makes
    every step see the full span of relative distances of the target window.
    """
    return random_positions(seq_len, seq_len * int(t), generator)


class UniformScaleCurriculum(SampledCurriculum):
    """Positions drawn uniformly from the whole window (RandomPos, Ruoss et al. 2023), as in the CLEX paper.

    With its defaults, t is uniform in ``{min_scale..max_scale}``: the
    paper's curriculum, drawing exactly what clexlab has always drawn (the
    default run's figures depend on it). The scale options of
    :class:`~clexlab.curriculum.sampled.SampledCurriculum` change only t:
    ``conf/curriculum/weight_one.yaml``, ``log_uniform.yaml``, ``continuous.yaml``.
    """

    def positions(self, seq_len: int, span: int, generator: torch.Generator) -> torch.Tensor:
        return random_positions(seq_len, span, generator)


# The same class under the name of its position scheme (the t-distribution configs use it).
RandomPositionCurriculum = UniformScaleCurriculum
