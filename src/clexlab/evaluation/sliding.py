"""Sliding-window perplexity (the YaRN / LongLoRA protocol) on the same targets at every length.

A window of ``length`` tokens moves along the stream by ``stride`` tokens. Each
window scores only the targets the previous window did not score; the first
window scores all of its targets. So every target after the first window is
predicted with at least ``length - stride`` tokens of context, where the
non-overlapping protocol (:mod:`clexlab.evaluation.perplexity`) gives the first
target of every window no context at all.

As in the non-overlapping protocol, every length scores the same targets:
tokens ``1..M`` of one stretch of ``M + 1`` tokens of the held-out stream.
Here ``M`` only needs to hold the longest window (no multiple of every length
is required): ``M = max(max_tokens, max(lengths))``. The last window is moved
back so that it ends exactly at token ``M`` (it keeps its full length; its
extra context is never harmful), which keeps every window ``length`` long and
lets windows of one length share a batch.

With ``stride >= length`` the windows no longer overlap and the result equals
the non-overlapping protocol on the same ``M`` (tested), so a stride larger
than a length is clipped to that length.

This module only plans the windows; they are scored by the loop both
protocols share (:func:`clexlab.evaluation.perplexity.score_windows`), which
splits them across ranks in lockstep and applies a KV policy if one is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from clexlab.evaluation.kv_policies import KVPolicy
from clexlab.evaluation.perplexity import IGNORE, LengthResult, held_out_stretch, score_windows
from clexlab.utils.errors import UserError

__all__ = ["IGNORE", "sliding_budget", "sliding_window_perplexity", "window_plan"]


def sliding_budget(lengths: Sequence[int], max_tokens: int) -> int:
    """Number of target tokens ``M`` for the sliding protocol: ``max(max_tokens, max(lengths))``."""
    if not lengths or any(int(n) <= 0 for n in lengths):
        raise UserError(f"eval lengths must be positive integers, got {list(lengths)}")
    return max(int(max_tokens), max(int(n) for n in lengths))


def window_plan(budget: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Windows of one length over targets ``1..budget``: ``(start, first_new)`` pairs.

    A window starting at ``start`` reads tokens ``start .. start+length-1`` and
    predicts tokens ``start+1 .. start+length``; of those it scores the ones at
    index ``>= first_new`` (the previous windows scored the rest).

    Args:
        budget: ``M``, the last target index (targets are ``1..M``).
        length: window length (``<= budget``).
        stride: how far each window moves (clipped to ``length``).

    Returns:
        The windows in order; together they score each target exactly once.
    """
    if length > budget:
        raise ValueError(f"window length {length} exceeds the {budget} target tokens")
    if stride <= 0:
        raise ValueError(f"stride must be > 0, got {stride}")
    stride = min(stride, length)
    plan, scored_to, start = [], 0, 0  # scored_to: last target index already scored
    while scored_to < budget:
        start = min(start, budget - length)  # the last window ends exactly at M
        plan.append((start, scored_to + 1))
        scored_to = start + length
        start += stride
    return plan


@torch.no_grad()
def sliding_window_perplexity(
    model: nn.Module,
    tokens: np.ndarray | torch.Tensor,
    lengths: Sequence[int],
    stride: int,
    max_tokens: int,
    batch_size: int = 1,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    chunk_size: int = 1024,
    lockstep: bool = False,
    kv_policy: KVPolicy | None = None,
) -> dict[int, LengthResult]:
    """Sliding-window perplexity of the same ``M`` targets at every length.

    Args:
        model: a transformers causal LM (any RoPE variant installed).
        tokens: the held-out token stream.
        lengths: window lengths to evaluate.
        stride: tokens each window moves by (clipped to the window length).
        max_tokens: target tokens per length (raised to the longest length if smaller).
        batch_size: windows per forward.
        rank, world_size: score only windows ``rank::world_size`` (sum the results across ranks).
        progress: show a progress bar per length.
        chunk_size: positions projected to the vocabulary at a time by the loss
            (bounds the float32 logits to ``[batch, chunk_size, vocab]``).
        lockstep: every rank runs the same number of forwards (FSDP: forwards are collectives).
        kv_policy: an evaluation-time KV policy (:mod:`clexlab.evaluation.kv_policies`); None: full attention.

    Returns:
        ``{length: LengthResult}`` with this rank's partial sums.

    Raises:
        UserError: when the stream holds fewer than ``M + 1`` tokens, or ``stride <= 0``.
    """
    if int(stride) <= 0:
        raise UserError(f"eval.stride must be a positive number of tokens, got {stride}")
    budget = sliding_budget(lengths, max_tokens)
    stream = held_out_stretch(tokens, budget, lengths, "sliding-window eval")
    plans = {int(n): window_plan(budget, int(n), int(stride)) for n in lengths}
    return score_windows(
        model, stream, plans, batch_size, rank, world_size, progress, lockstep, kv_policy, chunk_size, " (sliding)"
    )
