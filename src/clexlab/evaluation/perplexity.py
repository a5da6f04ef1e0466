"""Held-out perplexity at several lengths on the same target tokens.

Protocol (the CLEX paper's): the stream is cut into non-overlapping windows of
``length`` tokens, each window scored from its own start with contiguous
positions. To compare lengths fairly, every length scores the same targets:
tokens ``1..M`` of one stretch of ``M + 1`` tokens, where ``M`` is a multiple
of every length. Window ``i`` of length ``n`` reads tokens ``[i*n, i*n + n]``
and predicts the last ``n`` of them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clexlab.models.loss import causal_lm_nll
from clexlab.utils.errors import UserError


@dataclass
class LengthResult:
    """Summed NLL over ``tokens`` targets at one evaluation length."""

    length: int
    nll_sum: float
    tokens: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / max(self.tokens, 1))


def target_budget(lengths: Sequence[int], max_tokens: int) -> int:
    """Number of target tokens M: the largest multiple of lcm(lengths) within ``max_tokens`` (at least one)."""
    if not lengths or any(n <= 0 for n in lengths):
        raise UserError(f"eval lengths must be positive integers, got {list(lengths)}")
    lcm = math.lcm(*[int(n) for n in lengths])
    return lcm * max(1, int(max_tokens) // lcm)


def held_out_stretch(tokens: np.ndarray | torch.Tensor, budget: int, lengths: Sequence[int], what: str) -> torch.Tensor:
    """The first ``budget + 1`` tokens as int64, or a one-line error when the split is shorter."""
    if len(tokens) < budget + 1:
        raise UserError(
            f"{what} needs {budget + 1} tokens for lengths {list(lengths)} but the split has {len(tokens)}: "
            "lower eval.max_tokens or the eval lengths, or use a larger corpus"
        )
    return torch.as_tensor(np.asarray(tokens[: budget + 1], dtype=np.int64))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block, the previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def perplexity_at_lengths(
    model: nn.Module,
    tokens: np.ndarray | torch.Tensor,
    lengths: Sequence[int],
    max_tokens: int,
    batch_size: int = 1,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    lockstep: bool = False,
) -> dict[int, LengthResult]:
    """Score the same ``M`` target tokens at each length.

    Args:
        model: a transformers causal LM (any RoPE variant installed).
        tokens: the held-out token stream.
        lengths: window lengths to evaluate.
        max_tokens: target-token budget per length (rounded down to a multiple of lcm(lengths)).
        batch_size: windows per forward.
        rank, world_size: score only windows ``rank::world_size`` (sum the results across ranks).
        progress: show a progress bar.
        lockstep: every rank runs the same number of forwards (those short of
            windows score a repeated one and drop it). Needed when forwards are
            collectives, as with FSDP's all-gathers.

    Returns:
        ``{length: LengthResult}`` with this rank's partial sums.
    """
    stream = held_out_stretch(tokens, target_budget(lengths, max_tokens), lengths, "eval")
    device = next(model.parameters()).device
    results: dict[int, LengthResult] = {}
    with eval_mode(model):
        for length in lengths:
            all_windows = stream[:-1].view(-1, length)
            windows = all_windows[rank::world_size]
            targets = stream[1:].view(-1, length)[rank::world_size]
            nll, count = 0.0, 0
            starts = range(0, windows.shape[0], batch_size)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc=f"ppl@{length}", leave=False)
            for s in starts:
                ids = windows[s : s + batch_size].to(device)
                labels = targets[s : s + batch_size].to(device)
                batch_nll, batch_count = causal_lm_nll(model, ids, labels)
                nll += float(batch_nll)
                count += int(batch_count)
            if lockstep:
                most = math.ceil(math.ceil(all_windows.shape[0] / world_size) / batch_size)
                for _ in range(most - len(starts)):  # keep pace with the busiest rank; result dropped
                    causal_lm_nll(model, all_windows[:1].to(device), all_windows[:1].to(device))
            results[int(length)] = LengthResult(int(length), nll, count)
    return results


def resolve_lengths(train_length: int, multiples: Sequence[float] | None = None, lengths: Sequence[int] | None = None) -> list[int]:
    """Evaluation lengths: explicit ``lengths`` if given, else ``multiples`` of the train length."""
    if lengths:
        chosen = [int(n) for n in lengths]
    else:
        chosen = [int(round(m * train_length)) for m in (multiples or [1])]
    if any(n <= 0 for n in chosen):
        raise UserError(f"eval lengths must be positive, got {chosen}: fix eval.lengths or eval.multiples")
    return sorted(set(chosen))
