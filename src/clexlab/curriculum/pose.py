"""PoSE-style curriculum (Zhu et al. 2023): a few contiguous chunks with random skips between them."""

from __future__ import annotations

import torch

from clexlab.curriculum.positions import chunked_positions
from clexlab.curriculum.sampled import SampledCurriculum
from clexlab.utils.errors import UserError


class ChunkedPositionCurriculum(SampledCurriculum):
    """Positions in ``chunks`` contiguous runs, each shifted right by a random skip (PoSE).

    Neighbouring tokens inside a chunk keep distance 1 at every scale, which
    the random scheme never shows beyond t = 1; the skips make the distances
    across chunks vary over the whole window from step to step.

    Args:
        chunks: number of contiguous chunks (PoSE: 2).
        keep_ends: first token at 0 and last at ``span - 1`` (the random scheme's
            promise; off in PoSE, where the chunks may start anywhere).
        **options: the scale options and ``max_scale``/``seed``/... of
            :class:`~clexlab.curriculum.sampled.SampledCurriculum`.
    """

    def __init__(self, max_scale: int, seed: int = 0, *args, chunks: int = 2, keep_ends: bool = False, **options) -> None:
        super().__init__(max_scale, seed, *args, **options)
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise UserError(f"curriculum.chunks must be an integer >= 1, got {chunks!r}")
        self.chunks = chunks
        self.keep_ends = bool(keep_ends)

    def positions(self, seq_len: int, span: int, generator: torch.Generator) -> torch.Tensor:
        return chunked_positions(seq_len, span, self.chunks, generator, keep_ends=self.keep_ends)

    def scheme_tag(self) -> str:
        return f"pose{self.chunks}" + ("e" if self.keep_ends else "")
