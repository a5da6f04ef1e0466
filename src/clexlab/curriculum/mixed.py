"""A mix of contiguous and sampled steps: some steps keep positions ``0..n-1`` at the drawn t."""

from __future__ import annotations

import torch

from clexlab.curriculum.positions import contiguous_positions, random_positions
from clexlab.curriculum.sampled import SampledCurriculum
from clexlab.utils.errors import UserError


class MixedCurriculum(SampledCurriculum):
    """With probability ``contiguous_fraction`` a step keeps contiguous positions, else draws them at random.

    For CLEX a contiguous step at t > 1 trains the frequencies of scale t on
    neighbouring tokens, which is what every local window of an evaluation at
    ``t * L`` looks like; the sampled steps show the long distances. (For a
    method whose frequencies do not move with t, a contiguous step is an
    ordinary step.) Unlike ``p_one``, t is still drawn for contiguous steps.

    Args:
        contiguous_fraction: probability that a step at t > 1 keeps ``0..n-1``.
        **options: the scale options and ``max_scale``/``seed``/... of
            :class:`~clexlab.curriculum.sampled.SampledCurriculum`.
    """

    def __init__(self, max_scale: int, seed: int = 0, *args, contiguous_fraction: float = 0.5, **options) -> None:
        super().__init__(max_scale, seed, *args, **options)
        q = contiguous_fraction
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
            raise UserError(f"curriculum.contiguous_fraction must be a probability in [0, 1], got {q!r}")
        self.contiguous_fraction = float(q)

    def positions(self, seq_len: int, span: int, generator: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=generator)) < self.contiguous_fraction:
            return contiguous_positions(seq_len)
        return random_positions(seq_len, span, generator)

    def scheme_tag(self) -> str:
        return f"mix{self.contiguous_fraction:g}"
