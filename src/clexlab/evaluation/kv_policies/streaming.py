"""StreamingLLM (Xiao et al., 2023, arXiv 2309.17453): attention sinks plus a recent window.

Every query attends to the first ``n_sink`` tokens (the "attention sinks" that
soak up attention mass) and to the ``n_local`` most recent tokens, itself
included: ``n_sink + n_local`` keys at most, so the cache holds only those and
its memory grows with the budget, not the context (:mod:`.window`).

Positions are taken within the cache, as in StreamingLLM: the sinks sit at
``0..n_sink-1`` and the window right after them, so no distance ever exceeds
``n_sink + n_local - 1``. Window keys keep their distances to the query; only
the gap between sinks and window closes, by the same amount ``shift`` for every
sink, so the sinks are scored with the query rotated back by ``shift``
(``positions=original`` keeps the original distances instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from clexlab.evaluation.kv_policies.base import Block, scores
from clexlab.evaluation.kv_policies.window import SinkWindowPolicy


@dataclass
class StreamingPolicy(SinkWindowPolicy):
    """Sinks plus a sliding window, positions within the cache.

    Args:
        n_sink: initial tokens every query keeps (StreamingLLM: 4).
        n_local: most recent tokens a query attends to, itself included (default ``L - n_sink``:
            a cache of exactly the train length).
        positions: ``compact`` (positions within the cache) or ``original``.
        chunk_size: queries per prefill chunk (memory and speed only).
    """

    n_sink: int = 4
    n_local: int = 2000
    positions: str = "compact"
    chunk_size: int = 512

    name: ClassVar[str] = "streaming"
    OPTIONS: ClassVar[dict[str, tuple[str, Any]]] = {
        "n_sink": ("count", 0),
        "n_local": ("count", 1),
        "positions": ("choice", ("compact", "original")),
        "chunk_size": ("count", 1),
    }

    @classmethod
    def defaults(cls, train_length: int | None) -> dict[str, Any]:
        values = super().defaults(train_length)
        values["n_local"] = max(int(train_length) - values["n_sink"], 1) if train_length else None
        return values

    @property
    def n_first(self) -> int:
        return self.n_sink

    def first_logits(self, b: Block, n_first: int) -> torch.Tensor:
        query = b.query
        if self.positions == "compact":
            # The query's position within the cache is n_sink + (window size) - 1; the sinks
            # move closer by the gap, which is the same for every sink of one query.
            shift = (b.q_pos - (self.n_sink + self.n_local - 1)).clamp(min=0)
            if bool(shift.any()):
                query = b.rotary.rotate(b.query, -shift)
        return scores(query, b.keys[:, :, :n_first], b.scaling)

    def describe(self) -> str:
        suffix = "" if self.positions == "compact" else ",original"
        return f"streaming({self.n_sink}+{self.n_local}{suffix})"
