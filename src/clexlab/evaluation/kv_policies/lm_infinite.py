"""LM-Infinite (Han et al., 2023, arXiv 2308.16137): a Λ-shaped mask and a distance ceiling.

Every query attends to the first ``n_global`` tokens and to the ``n_local``
most recent ones (itself included): the Λ shape (:mod:`.window`). No relative
distance exceeds ``max_distance``: a global token farther than that is scored
as if it were exactly ``max_distance`` away, by the released code's trick of
meeting the un-rotated key (position 0) with the query rotated to position
``max_distance``. The released defaults are ``n_local = max_distance = L`` (the
train length) and 10 global tokens (their scripts also use 100; "10-100 gives
similar results").

One difference from the released ``lambda_attention``: it gives every global
token outside the window the distance ``max_distance`` even when it is nearer;
here the distance is ``min(distance, max_distance)``, the paper's wording. The two
agree whenever ``max_distance <= n_local``, which includes the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from clexlab.evaluation.kv_policies.base import Block, scores
from clexlab.evaluation.kv_policies.window import SinkWindowPolicy
from clexlab.utils.errors import UserError


@dataclass
class LMInfinitePolicy(SinkWindowPolicy):
    """Global tokens plus a local window, distances capped.

    Args:
        n_global: initial tokens every query keeps (10).
        n_local: most recent tokens a query attends to, itself included (default L).
        max_distance: the distance ceiling (default L); at least ``n_local - 1``.
        chunk_size: queries per prefill chunk (memory and speed only).
    """

    n_global: int = 10
    n_local: int = 4096
    max_distance: int = 4096
    chunk_size: int = 512

    name: ClassVar[str] = "lm_infinite"
    OPTIONS: ClassVar[dict[str, tuple[str, Any]]] = {
        "n_global": ("count", 0),
        "n_local": ("count", 1),
        "max_distance": ("count", 1),
        "chunk_size": ("count", 1),
    }

    @classmethod
    def defaults(cls, train_length: int | None) -> dict[str, Any]:
        length = int(train_length) if train_length else None
        return {**super().defaults(train_length), "n_local": length, "max_distance": length}

    def __post_init__(self) -> None:
        if self.n_local - 1 > self.max_distance:
            raise UserError(
                f"eval.kv.max_distance ({self.max_distance}) must be >= eval.kv.n_local - 1 ({self.n_local - 1}): "
                "the local window's own distances reach n_local - 1"
            )

    @property
    def n_first(self) -> int:
        return self.n_global

    def covers(self, n_tokens: int) -> bool:
        return super().covers(n_tokens) and n_tokens - 1 <= self.max_distance

    def first_logits(self, b: Block, n_first: int) -> torch.Tensor:
        keys, glob_pos = b.keys[:, :, :n_first], b.k_pos[:n_first]
        logits = scores(b.query, keys, b.scaling)
        # Only globals outside the window can be this far; those inside keep their own distance.
        capped = (b.q_pos.unsqueeze(1) - glob_pos.unsqueeze(0)) > self.max_distance
        if bool(capped.any()):
            # Query at position max_distance, keys at position 0: distance exactly max_distance.
            query = b.rotary.rotate(b.query, self.max_distance - b.q_pos)
            stationary = scores(query, b.rotary.rotate(keys, -glob_pos), b.scaling)
            logits = torch.where(capped, stationary, logits)
        return logits

    def describe(self) -> str:
        return f"lm_infinite({self.n_global}+{self.n_local},d{self.max_distance})"
