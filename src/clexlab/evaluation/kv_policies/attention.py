"""The attention function that applies a KV policy, and the context that switches a model to it.

It is registered with transformers' ``AttentionInterface`` (its mask function
with ``AttentionMaskInterface``) and selected with
``model.set_attn_implementation``, the way :mod:`clexlab.rope.log_scale`
wraps attention: no transformers module is patched. It receives what every
attention implementation receives: this forward's queries, and the keys and
values the cache returned, which hold the past as well (transformers caches
keys after RoPE). Then:

* the queries' positions come from ``position_ids``; the keys' from what this
  layer saw last time plus the new queries (the chunked runner evicts keys a
  policy no longer needs, so the cached keys can have gaps); a cache the runner
  did not touch holds consecutive positions;
* while the policy's budget covers the sequence, the model's own
  implementation runs unchanged (a budget larger than the context is full
  attention, exactly);
* otherwise the queries are cut into blocks of ``chunk_size`` (chunked
  prefill) and each block goes to the policy with the keys up to its last
  query, so a forward of many queries (a prompt, or CLEX's refill of the whole
  history when its scale changes) computes what feeding the blocks one by one
  through a cache computes.

Padded batches are refused (policies need one set of positions per batch).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from clexlab.arch import architecture_of
from clexlab.evaluation.kv_policies.base import Block, KVPolicy
from clexlab.evaluation.kv_policies.rotation import Rotary
from clexlab.rope.frequencies import inv_freq_for

NAME = "clexlab_kv_policy"
RUN_ATTRIBUTE = "_clexlab_kv_run"


class PolicyRun:
    """A model running under one policy: per-layer state, key positions, counters.

    Attributes:
        model: the causal LM.
        policy: the policy.
        base: the attention implementation the policy wraps (``sdpa``, ``eager``, ...).
        states: per-layer policy state (e.g. TokenSelect's fingerprints), reset with each sequence.
        key_positions: per layer, the original positions of the keys its cache holds.
        stats: counters (TokenSelect: ``selected`` / ``reused`` blocks x layers x rows).
    """

    def __init__(self, model: nn.Module, policy: KVPolicy, base: str) -> None:
        self.model, self.policy, self.base = model, policy, base
        self.states: dict[int, dict] = {}
        self.key_positions: dict[int, torch.Tensor] = {}
        self.stats: dict[str, int] = {}
        self._freq: tuple[int, torch.Tensor] | None = None

    def reset(self) -> None:
        """Forget every sequence-level state (a new window or prompt starts)."""
        self.states.clear()
        self.key_positions.clear()

    def rotary(self, seq_len: int, device: torch.device) -> Rotary:
        """Rotations with the frequencies of a forward over positions ``0..seq_len-1`` (CLEX's scale follows it)."""
        if self._freq is None or self._freq[0] != seq_len:
            self._freq = (seq_len, inv_freq_for(self.model, seq_len))
        return Rotary(self._freq[1].to(device))

    def positions(
        self, layer: int, q_len: int, kv_len: int, position_ids: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q_pos [q_len], k_pos [kv_len])`` of one layer's attention call; records ``k_pos`` for the next call."""
        past = kv_len - q_len
        if position_ids is None:
            q_pos = torch.arange(past, kv_len, device=device)
        else:
            rows = position_ids.reshape(-1, q_len)
            if rows.shape[0] > 1 and not bool((rows == rows[:1]).all()):
                raise ValueError("kv policies need the same positions in every row of a batch (no left padding)")
            q_pos = rows[0].to(device=device, dtype=torch.long)
        kept = self.key_positions.get(layer)
        if past == 0:
            k_pos = q_pos
        elif kept is not None and kept.numel() == past:
            k_pos = torch.cat([kept.to(device), q_pos])
        else:  # a cache nobody evicted from: consecutive positions up to the queries
            k_pos = torch.cat([torch.arange(int(q_pos[0]) - past, int(q_pos[0]), device=device), q_pos])
        self.key_positions[layer] = k_pos
        return q_pos, k_pos

    def state(self, layer: int, fresh: bool) -> dict:
        """The policy state of one layer (emptied when a sequence starts)."""
        if fresh or layer not in self.states:
            self.states[layer] = {}
        return self.states[layer]

    def evict(self, cache, next_pos: int) -> None:
        """Drop from ``cache`` the keys and values no query at ``next_pos`` or later can attend to.

        Works on the layers of any transformers ``DynamicCache`` (their ``keys`` /
        ``values`` tensors), so CLEX's own cache class is followed too.
        """
        for layer, cached in enumerate(cache.layers):
            keys = getattr(cached, "keys", None)
            k_pos = self.key_positions.get(layer)
            if keys is None or keys.numel() == 0 or k_pos is None or k_pos.numel() != keys.shape[-2]:
                continue
            keep = self.policy.needed(k_pos, next_pos)
            if not bool(keep.all()):
                index = keep.nonzero().squeeze(1).to(keys.device)
                cached.keys = keys.index_select(-2, index)
                cached.values = cached.values.index_select(-2, index)
                self.key_positions[layer] = k_pos[keep]


def _base_function(module: nn.Module, name: str):
    """The implementation the policy wraps; ``eager`` is the model file's own ``eager_attention_forward``."""
    if name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    return sys.modules[type(module).__module__].eager_attention_forward


def kv_policy_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: the model's attention under the active :class:`PolicyRun`."""
    run: PolicyRun | None = getattr(module, RUN_ATTRIBUTE, None)
    if run is None:
        raise RuntimeError(f"{NAME} attention runs only inside clexlab.evaluation.kv_policies.use_kv_policy")
    q_len, kv_len = query.shape[2], key.shape[2]
    layer = int(module.layer_idx)
    q_pos, k_pos = run.positions(layer, q_len, kv_len, kwargs.get("position_ids"), query.device)
    state = run.state(layer, fresh=kv_len == q_len)
    policy = run.policy
    seq_len = int(q_pos[-1]) + 1
    if policy.covers(seq_len):
        base = _base_function(module, run.base)
        return base(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    rotary = run.rotary(seq_len, query.device)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    past, outputs = kv_len - q_len, []
    for start in range(0, q_len, policy.chunk_size):
        stop = min(start + policy.chunk_size, q_len)
        seen = past + stop  # keys up to this block's last query; the later ones are its future
        block = Block(
            query[:, :, start:stop], key[:, :, :seen], value[:, :, :seen], q_pos[start:stop], k_pos[:seen],
            rotary, scale, kwargs.get("softcap"), kwargs.get("sliding_window"), state, run.stats,
        )
        outputs.append(policy.attend(block))
    return torch.cat(outputs, dim=1), None


def _padding_refusing(mask_function):
    """The base mask function, refusing padded batches (policies need shared positions)."""

    def mask(*args, attention_mask: torch.Tensor | None = None, **kwargs):
        if attention_mask is not None and attention_mask.dim() == 2 and not bool(attention_mask.all()):
            raise ValueError("kv policies do not support padded batches: score sequences of one length without padding")
        return mask_function(*args, attention_mask=attention_mask, **kwargs)

    return mask


@contextlib.contextmanager
def use_kv_policy(model: nn.Module, policy: KVPolicy | None) -> Iterator[PolicyRun | None]:
    """Run ``model``'s attention under ``policy`` inside the block (``None``: unchanged, yields None).

    Everything the model does inside, ``forward`` and ``generate`` alike, goes
    through the policy; the previous attention implementation is restored after.

    Yields:
        The :class:`PolicyRun` (its ``stats``, and what the chunked runner needs).
    """
    if policy is None:
        yield None
        return
    base = model.config._attn_implementation or "sdpa"
    if base.startswith(NAME):
        raise RuntimeError("use_kv_policy blocks cannot be nested")
    name = f"{NAME}_{base}"  # the mask must come in the format the wrapped implementation reads
    AttentionInterface.register(name, kv_policy_attention)
    AttentionMaskInterface.register(name, _padding_refusing(ALL_MASK_ATTENTION_FUNCTIONS[base]))
    run = PolicyRun(model, policy, base)
    modules = architecture_of(model).attention_modules(model)
    for module in modules:
        setattr(module, RUN_ATTRIBUTE, run)
    model.set_attn_implementation(name)
    try:
        yield run
    finally:
        model.set_attn_implementation(base)
        for module in modules:
            delattr(module, RUN_ATTRIBUTE)
