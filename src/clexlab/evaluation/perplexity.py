"""Held-out perplexity at several lengths on the same target tokens.

Protocol (the CLEX paper's): the stream is cut into non-overlapping windows of
``length`` tokens, each window scored from its own start with contiguous
positions. To compare lengths fairly, every length scores the same targets:
tokens ``1..M`` of one stretch of ``M + 1`` tokens, where ``M`` is a multiple
of every length. Window ``i`` of length ``n`` reads tokens ``[i*n, i*n + n]``
and predicts the last ``n`` of them.

Both protocols (this one and :mod:`clexlab.evaluation.sliding`) are a plan of
windows per length scored by one loop, :func:`score_windows`: it splits the
windows across ranks, keeps the ranks in lockstep when forwards are
collectives (FSDP), and scores under an evaluation-time KV policy when one is
given (:mod:`clexlab.evaluation.kv_policies`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clexlab.evaluation.kv_policies import KVPolicy, policy_nll, use_kv_policy
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


Plan = list[tuple[int, int]]  # windows of one length: (start, first target index it scores)
IGNORE = -100


def chunk_plan(budget: int, length: int) -> Plan:
    """Non-overlapping windows over targets ``1..budget``: each scores all of its ``length`` targets."""
    return [(start, start + 1) for start in range(0, budget - length + 1, length)]


def window_batch(stream: torch.Tensor, windows: Plan, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` ``[len(windows), length]``; targets an earlier window scored are ``-100``."""
    starts = torch.tensor([s for s, _ in windows])
    index = starts[:, None] + torch.arange(length)  # token indices read
    labels = stream[index + 1]
    first_new = torch.tensor([f for _, f in windows])
    return stream[index], labels.masked_fill(index + 1 < first_new[:, None], IGNORE)


@torch.no_grad()
def score_windows(
    model: nn.Module,
    stream: torch.Tensor,
    plans: dict[int, Plan],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
    lockstep: bool = False,
    kv_policy: KVPolicy | None = None,
    chunk_size: int = 1024,
    desc: str = "",
) -> dict[int, LengthResult]:
    """The scoring loop both protocols share: one plan of windows per length, windows ``rank::world_size``.

    Args:
        model: a transformers causal LM.
        stream: the ``M + 1`` tokens of the held-out stretch.
        plans: ``{length: windows}`` (:func:`chunk_plan`, :func:`clexlab.evaluation.sliding.window_plan`).
        batch_size: windows per forward.
        rank, world_size: this rank's share of every plan.
        progress: show a progress bar per length.
        lockstep: every rank runs as many batches as the busiest one (those short of
            windows score the plan's first window again and drop it), so forwards
            that are collectives (FSDP's all-gathers) line up across ranks.
        kv_policy: score under this evaluation-time KV policy (None: full attention, today's path).
        chunk_size: positions projected to the vocabulary at a time.
        desc: progress-bar label suffix.

    Returns:
        ``{length: LengthResult}`` with this rank's partial sums.
    """
    device = next(model.parameters()).device
    results: dict[int, LengthResult] = {}
    with eval_mode(model), use_kv_policy(model, kv_policy) as run:
        for length, plan in plans.items():
            mine = plan[rank::world_size]
            batches = range(0, len(mine), batch_size)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=f"ppl@{length}{desc}", leave=False)
            nll, count = 0.0, 0
            for b in batches:
                ids, labels = window_batch(stream, mine[b : b + batch_size], length)
                batch_nll, batch_count = policy_nll(model, ids.to(device), labels.to(device), run, chunk_size)
                nll += float(batch_nll)
                count += int(batch_count)
            if lockstep:
                most = math.ceil(math.ceil(len(plan) / world_size) / batch_size)
                ids, labels = window_batch(stream, plan[:1], length)
                for _ in range(most - len(batches)):  # keep pace with the busiest rank; result dropped
                    policy_nll(model, ids.to(device), labels.to(device), run, chunk_size)
            results[int(length)] = LengthResult(int(length), nll, count)
        if run is not None and run.stats:
            _log_selection_cache(kv_policy, run.stats)
    return results


def _log_selection_cache(policy: KVPolicy, stats: dict[str, int]) -> None:
    """How often TokenSelect's Selection Cache reused a selection (rows x layers x blocks), on the log."""
    reused, selected = stats.get("reused", 0), stats.get("selected", 0)
    if reused + selected:
        logging.getLogger("clexlab").info(
            "%s: the Selection Cache reused %d of %d selections (%.0f %%)",
            policy.describe(), reused, reused + selected, 100 * reused / (reused + selected),
        )


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
    kv_policy: KVPolicy | None = None,
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
        kv_policy: an evaluation-time KV policy (:mod:`clexlab.evaluation.kv_policies`); None: full attention.

    Returns:
        ``{length: LengthResult}`` with this rank's partial sums.
    """
    budget = target_budget(lengths, max_tokens)
    stream = held_out_stretch(tokens, budget, lengths, "eval")
    plans = {int(n): chunk_plan(budget, int(n)) for n in lengths}
    return score_windows(model, stream, plans, batch_size, rank, world_size, progress, lockstep, kv_policy)


def resolve_lengths(train_length: int, multiples: Sequence[float] | None = None, lengths: Sequence[int] | None = None) -> list[int]:
    """Evaluation lengths: explicit ``lengths`` if given, else ``multiples`` of the train length."""
    if lengths:
        chosen = [int(n) for n in lengths]
    else:
        chosen = [int(round(m * train_length)) for m in (multiples or [1])]
    if any(n <= 0 for n in chosen):
        raise UserError(f"eval lengths must be positive, got {chosen}: fix eval.lengths or eval.multiples")
    return sorted(set(chosen))
