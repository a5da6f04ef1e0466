"""TokenSelect (Wu et al., 2024, arXiv 2411.02886): dynamic token-level KV selection by per-head soft voting.

As the paper and its released code (``pzs19/TokenSelect``, ``patcher/token_retrieval.py``) define it:

* **Which keys.** A block of queries (a prefill chunk, or one decode step)
  attends to the first ``n_init`` tokens, the ``top_k`` most critical tokens
  between them and the local window, and the last ``n_local`` tokens (which
  cover the block itself; a chunk longer than ``n_local`` extends it to the
  chunk's start). While ``n_init + top_k + n_local`` covers the context, every
  key is kept: full attention.
* **Criticality, per head.** The released code keeps keys before RoPE and
  scores them against the block's queries rotated to positions ``n_local + i``
  and averaged over the block: dot products as if every candidate sat
  ``n_local`` tokens away, unscaled. Here the cached keys are rotated back to
  position 0 once when they arrive (the "fingerprints", an extra copy of the
  keys) and the mean query is rotated to ``n_local``: the same numbers.
* **Soft voting.** A softmax over the candidates per query head, summed over
  heads; the ``top_k`` largest, in position order, are shared by all heads.
  Grouped-query attention: query head ``h`` scores kv head ``h // groups``
  (the released Triton kernel indexes ``h % num_kv_heads``, which pairs heads
  differently from transformers' ``repeat_kv`` layout).
* **Selection Cache.** When a block's mean query has cosine similarity
  ``>= similarity_threshold`` with the query of the last selection (per layer
  and sequence), the previous selection is reused without scoring (a selected
  token that has since entered the local window is dropped, not repeated).
  The released code ships it switched off; a threshold above 1 never reuses.
* **Positions.** ``compact`` (released): the kept keys are laid out in order
  (initial, selected, local) and take consecutive positions ending at the
  query, which is what lets the model run beyond its trained length: no
  distance exceeds the budget. ``original`` keeps their own positions.

Nothing is evicted: any token may be selected later. Memory is the full cache
plus the fingerprints; the saving is in attention time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from clexlab.evaluation.kv_policies.base import Block, KVPolicy, attend_segments, scores, visible


@dataclass
class TokenSelectPolicy(KVPolicy):
    """Per-head soft-voted top-k keys plus initial and local tokens.

    Args:
        n_init: initial tokens always kept (released: 128).
        n_local: most recent tokens always kept (released: 512).
        top_k: selected tokens (released: 2048).
        positions: ``compact`` (released) or ``original``.
        similarity_threshold: Selection Cache threshold on the cosine similarity of
            consecutive blocks' mean queries (0.9); above 1 the cache never hits.
        chunk_size: queries per prefill chunk, which share one selection (released: 512).
    """

    n_init: int = 128
    n_local: int = 512
    top_k: int = 2048
    positions: str = "compact"
    similarity_threshold: float = 0.9
    chunk_size: int = 512

    name: ClassVar[str] = "tokenselect"
    OPTIONS: ClassVar[dict[str, tuple[str, Any]]] = {
        "n_init": ("count", 0),
        "n_local": ("count", 1),
        "top_k": ("count", 1),
        "positions": ("choice", ("compact", "original")),
        "similarity_threshold": ("float", None),
        "chunk_size": ("count", 1),
    }

    @property
    def budget(self) -> int:
        return self.n_init + self.top_k + self.n_local

    def covers(self, n_tokens: int) -> bool:
        return n_tokens <= self.budget

    def attend(self, b: Block) -> torch.Tensor:
        n = b.k_pos.numel()
        if int(b.k_pos[-1]) != n - 1:
            raise RuntimeError("TokenSelect needs every key of the sequence in the cache (no eviction, no padding)")
        if n <= self.budget:  # the whole past fits: full attention
            mask = visible(b.q_pos, b.k_pos, b.window)
            return attend_segments([(scores(b.query, b.keys, b.scaling), b.values, mask)], b.softcap, b.query.dtype)
        local_start = min(int(b.q_pos[0]), n - self.n_local)
        if local_start - self.n_init <= self.top_k:  # every candidate fits: keep them all
            chosen = torch.arange(self.n_init, local_start, device=b.keys.device).expand(b.keys.shape[0], -1)
            valid = torch.ones_like(chosen, dtype=torch.bool)
            version = ("all", local_start)
        else:
            chosen, valid = self._select(b, local_start)
            version = ("selection", b.state["selection_version"])
        return self._attend(b, chosen, valid, local_start, version)

    # ------------------------------------------------------------- selection
    def _fingerprints(self, b: Block) -> torch.Tensor:
        """Keys rotated back to position 0 (the released code's pre-RoPE keys), appended as they arrive.

        Kept in a buffer with 25 % headroom, so a decode step appends one row
        instead of copying every fingerprint (amortised O(1) per token).
        """
        buffer, have = b.state.get("fingerprints"), b.state.get("fingerprints_len", 0)
        n = b.keys.shape[2]
        if have < n:
            new = b.rotary.rotate(b.keys[:, :, have:n], -b.k_pos[have:n])
            if buffer is None or buffer.shape[2] < n:
                grown = new.new_empty(*new.shape[:2], n + n // 4, new.shape[3])
                if have:
                    grown[:, :, :have] = buffer[:, :, :have]
                buffer = b.state["fingerprints"] = grown
            buffer[:, :, have:n] = new
            b.state["fingerprints_len"] = n
        return buffer[:, :, :n]

    def _select(self, b: Block, local_start: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The released code rotates query i of the block to position n_local + i; the block's
        # positions are consecutive, so that is one shift for all of them. Then the mean query.
        fingerprint = b.rotary.rotate(b.query, self.n_local - b.q_pos[0]).float().mean(dim=2)  # [b, h, d]
        flat = fingerprint.flatten(1)
        state, batch = b.state, fingerprint.shape[0]
        previous = state.get("selection")
        hit = torch.zeros(batch, dtype=torch.bool, device=flat.device)
        if previous is not None and self.similarity_threshold <= 1 and previous.shape == (batch, self.top_k):
            hit = F.cosine_similarity(flat, state["query"], dim=-1) >= self.similarity_threshold
        b.stats["reused"] = b.stats.get("reused", 0) + int(hit.sum())
        b.stats["selected"] = b.stats.get("selected", 0) + int((~hit).sum())
        if bool(hit.all()):
            chosen = previous
        else:
            fp = self._fingerprints(b)[:, :, self.n_init : local_start]
            logits = scores(fingerprint.to(fp.dtype).unsqueeze(2), fp, 1.0)  # [b, hkv, g, 1, candidates]
            votes = torch.softmax(logits, dim=-1).sum(dim=(1, 2, 3))  # soft voting over query heads
            top = votes.topk(self.top_k, dim=-1).indices.sort(dim=-1).values + self.n_init
            chosen = top if previous is None or not bool(hit.any()) else torch.where(hit[:, None], previous, top)
            # The Selection Cache compares with the query that made the selection, not the last one.
            query = flat if "query" not in state else torch.where(hit[:, None], state["query"], flat)
            state["query"], state["selection"] = query, chosen
            state["selection_version"] = state.get("selection_version", 0) + 1
        # A reused token may have entered the local window since: attend to it there, once.
        valid = (chosen >= self.n_init) & (chosen < local_start)
        return chosen, valid

    # ------------------------------------------------------------- attention
    def _kept(self, b: Block, chosen: torch.Tensor, valid: torch.Tensor, local_start: int, version: tuple):
        """Key and value buffers of the block: the initial and selected tokens, then room for the local ones.

        Compact positions lay the kept keys out in order and end them at the
        query: with the block's first query moved to position 0 (``P`` its
        original position), kept key j sits at ``local_start - P - n_valid +
        rank_j``. That does not change from one decode step to the next while a
        selection is reused, so the rotated keys stay in the buffers, and a
        step only writes its local keys into the tail.

        Returns:
            ``(keys, values, positions, valid)``: buffers ``[b, kv_heads, kept + local, d]``,
            the kept tokens' original positions and validity ``[b, kept]``.
        """
        p0, local = int(b.q_pos[0]), b.keys.shape[2] - local_start
        n_valid = valid.sum(dim=1)  # [b]
        key = (version, local_start - p0, local, tuple(n_valid.tolist()))
        cached = b.state.get("kept")
        if cached is not None and cached[0] == key:
            return cached[1:]
        keys, values = b.keys, b.values
        batch, kv_heads, _, dim = keys.shape
        index = chosen.clamp(max=keys.shape[2] - 1)[:, None, :, None].expand(batch, kv_heads, -1, dim)
        kept_keys = torch.cat([keys[:, :, : self.n_init].expand(batch, -1, -1, -1), keys.gather(2, index)], dim=2)
        positions = torch.cat([b.k_pos[: self.n_init].expand(batch, -1), chosen], dim=1)
        kept_valid = torch.cat([torch.ones_like(valid[:, :1]).expand(-1, self.n_init), valid], dim=1)
        if self.positions == "compact":
            rank = kept_valid.cumsum(dim=1) - 1  # order among the kept keys; invalid ones are masked out
            target = (local_start - p0) - self.n_init - n_valid[:, None] + rank
            kept_keys = b.rotary.rotate(kept_keys, torch.where(kept_valid, target - positions, 0)[:, None, :])
        kept = kept_keys.shape[2]
        key_buffer = kept_keys.new_empty(batch, kv_heads, kept + local, dim)
        value_buffer = values.new_empty(batch, kv_heads, kept + local, dim)
        key_buffer[:, :, :kept] = kept_keys
        value_buffer[:, :, : self.n_init] = values[:, :, : self.n_init]
        value_buffer[:, :, self.n_init : kept] = values.gather(2, index)
        b.state["kept"] = (key, key_buffer, value_buffer, positions, kept_valid)
        return key_buffer, value_buffer, positions, kept_valid

    def _attend(
        self, b: Block, chosen: torch.Tensor, valid: torch.Tensor, local_start: int, version: tuple
    ) -> torch.Tensor:
        all_keys, all_values, kept_pos, kept_valid = self._kept(b, chosen, valid, local_start, version)
        kept = kept_pos.shape[1]
        local_keys, local_pos = b.keys[:, :, local_start:], b.k_pos[local_start:]
        query = b.query
        if self.positions == "compact":
            # Everything relative to the block's first query: it moves to 0, the local keys by as much.
            p0 = int(b.q_pos[0])
            query, local_keys = b.rotary.rotate(query, -p0), b.rotary.rotate(local_keys, -p0)
        all_keys[:, :, kept:] = local_keys
        all_values[:, :, kept:] = b.values[:, :, local_start:]
        # Visibility by original positions: causal in the window, the layer's own window rule if any.
        kept_mask = visible(b.q_pos, kept_pos, b.window) & kept_valid[:, None, :]  # [b, c, kept]
        local_mask = visible(b.q_pos, local_pos, b.window).expand(kept_pos.shape[0], -1, -1)
        mask = torch.cat([kept_mask, local_mask], dim=2)
        if b.softcap:
            logits = scores(query, all_keys, b.scaling)
            return attend_segments([(logits, all_values, mask[:, None, None])], b.softcap, b.query.dtype)
        out = F.scaled_dot_product_attention(
            query, all_keys, all_values, attn_mask=None if bool(mask.all()) else mask[:, None],
            scale=b.scaling, enable_gqa=query.shape[1] != all_keys.shape[1],
        )
        return out.transpose(1, 2)

    def describe(self) -> str:
        suffix = "" if self.positions == "compact" else ",original"
        return f"tokenselect({self.n_init}+{self.top_k}+{self.n_local}{suffix})"
