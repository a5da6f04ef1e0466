"""Position schemes: which ``n`` positions out of a window of ``span`` a step's tokens take.

Every scheme returns ``n`` sorted, distinct int64 positions in ``[0, span)``.
The random scheme keeps the first at ``0`` and the last at ``span - 1``, so
each step sees the full range of relative distances of the window it
simulates. They differ in what survives of the text's own adjacency:

* :func:`random_positions` (RandomPos, Ruoss et al. 2023; the CLEX paper's
  curriculum): ``n`` positions anywhere in the window. At span ``16 n`` two
  neighbouring tokens sit ~16 positions apart: the model never sees distance 1
  at that scale.
* :func:`chunked_positions` (PoSE, Zhu et al. 2023): the ``n`` tokens are cut
  into a few contiguous chunks, each moved right by a random skip, so
  positions inside a chunk stay adjacent (first and last kept only on request).
* :func:`contiguous_positions`: ``0..n-1`` (ordinary training).
"""

from __future__ import annotations

import torch


def contiguous_positions(seq_len: int) -> torch.Tensor:
    """``0..seq_len-1``."""
    return torch.arange(seq_len, dtype=torch.long)


def random_positions(seq_len: int, span: int, generator: torch.Generator) -> torch.Tensor:
    """``seq_len`` sorted distinct positions drawn uniformly from ``[0, span)``, first and last kept.

    With ``span == seq_len`` this is ``arange(seq_len)``. The draw (a
    ``randperm`` of the inner positions) is the one the uniform curriculum has
    always made, so its runs keep their figures.
    """
    _check(seq_len, span)
    if span == seq_len or seq_len <= 2:
        positions = contiguous_positions(seq_len)
        if seq_len == 2:
            positions[-1] = span - 1
        return positions
    inner = torch.randperm(span - 2, generator=generator)[: seq_len - 2] + 1
    inner, _ = torch.sort(inner)
    return torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([span - 1])])


def chunked_positions(
    seq_len: int, span: int, chunks: int, generator: torch.Generator, keep_ends: bool = False
) -> torch.Tensor:
    """PoSE-style positions: ``chunks`` contiguous runs of tokens, each moved right by a random skip.

    The ``n`` tokens are cut at ``chunks - 1`` distinct random points (every
    chunk holds at least one token). Chunk ``j`` is shifted by ``u_j``, where
    ``u_0 <= u_1 <= ...`` are sorted uniform draws from ``[0, span - n]``, so
    positions inside a chunk stay adjacent and the distances across chunks vary
    from step to step over the whole window. PoSE (Zhu et al. 2023) uses two
    chunks and draws ``u_1`` uniformly above ``u_0``; sorting independent draws
    is the same idea for any number of chunks.

    Args:
        seq_len: number of tokens ``n``.
        span: the simulated window (``round(n * t)``), at least ``n``.
        chunks: number of contiguous chunks (>= 1; clipped to ``n``).
        generator: the step's generator (see :func:`~clexlab.curriculum.base.step_generator`).
        keep_ends: pin ``u_0 = 0`` and ``u_last = span - n``, so the first token sits
            at 0 and the last at ``span - 1`` (with two chunks the skip is then
            always the whole gap: only the cut point is random).
    """
    _check(seq_len, span)
    k = max(1, min(int(chunks), seq_len))
    gap = span - seq_len
    if gap == 0:
        return contiguous_positions(seq_len)
    if keep_ends and k == 1:  # one chunk cannot both start at 0 and end at span - 1
        return _one_chunk_with_ends(seq_len, span)
    cuts, _ = torch.sort(torch.randperm(seq_len - 1, generator=generator)[: k - 1] + 1)
    if keep_ends:  # the outer shifts pinned to 0 and gap, the k - 2 between them drawn
        inner, _ = torch.sort(torch.randint(0, gap + 1, (k - 2,), generator=generator))
        shifts = torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([gap])])
    else:
        shifts, _ = torch.sort(torch.randint(0, gap + 1, (k,), generator=generator))
    starts = torch.cat([torch.zeros(1, dtype=torch.long), cuts])
    lengths = torch.diff(torch.cat([starts, torch.tensor([seq_len])]))
    return contiguous_positions(seq_len) + torch.repeat_interleave(shifts, lengths)


def _one_chunk_with_ends(seq_len: int, span: int) -> torch.Tensor:
    """A single chunk with the ends kept: ``0..n-2`` and ``span - 1``."""
    positions = contiguous_positions(seq_len)
    positions[-1] = span - 1
    return positions


def _check(seq_len: int, span: int) -> None:
    if seq_len < 1 or span < seq_len:
        raise ValueError(f"need 1 <= seq_len <= span, got seq_len={seq_len}, span={span}")
