"""What StreamingLLM and LM-Infinite share: the first tokens of the sequence plus a sliding window.

Every query attends to the first ``n_first`` tokens of the sequence (StreamingLLM's
attention sinks, LM-Infinite's global tokens) and to the ``n_local`` most recent
ones, itself included. Nothing else is ever read again, so the chunked runner
evicts it: the cache holds ``n_first + n_local`` keys plus one chunk, whatever
the context. The window slides with every query, so the result is per-query
exact and does not depend on ``chunk_size``.

The two policies differ only in the distance a first token is scored at (the
window keys always keep their own distances): each implements
:meth:`SinkWindowPolicy.first_logits`.
"""

from __future__ import annotations

from abc import abstractmethod

import torch

from clexlab.evaluation.kv_policies.base import Block, KVPolicy, attend_segments, scores, visible


class SinkWindowPolicy(KVPolicy):
    """The first ``n_first`` tokens plus a window of the ``n_local`` most recent ones.

    Subclasses are dataclasses with an ``n_local`` field and name their first tokens
    through :attr:`n_first`.
    """

    n_local: int

    @property
    @abstractmethod
    def n_first(self) -> int:
        """How many initial tokens every query keeps."""

    @property
    def budget(self) -> int:
        return self.n_first + self.n_local

    def covers(self, n_tokens: int) -> bool:
        return n_tokens <= self.budget

    def needed(self, k_pos: torch.Tensor, next_pos: int) -> torch.Tensor:
        return (k_pos < self.n_first) | (k_pos > next_pos - self.n_local)

    @abstractmethod
    def first_logits(self, b: Block, n_first: int) -> torch.Tensor:
        """Logits ``[batch, kv_heads, groups, c, n_first]`` of the block's queries against the first keys."""

    def attend(self, b: Block) -> torch.Tensor:
        k_pos, q_pos = b.k_pos, b.q_pos
        n_first = int((k_pos < self.n_first).sum())
        # Window candidates: keys after the first tokens, inside the first query's window or later.
        lo = max(n_first, int(torch.searchsorted(k_pos, q_pos[0] - self.n_local + 1)))
        win_pos = k_pos[lo:]
        in_window = visible(q_pos, win_pos, b.window) & (win_pos.unsqueeze(0) > q_pos.unsqueeze(1) - self.n_local)
        segments = []
        if n_first:
            first_mask = visible(q_pos, k_pos[:n_first], b.window)
            segments.append((self.first_logits(b, n_first), b.values[:, :, :n_first], first_mask))
        segments.append((scores(b.query, b.keys[:, :, lo:], b.scaling), b.values[:, :, lo:], in_window))
        return attend_segments(segments, b.softcap, b.query.dtype)
