"""What every KV policy shares: the interface, the block of queries it decides for, the attention maths, option checks.

A policy decides, for each query, which cached keys it attends to and at
which positions. :mod:`clexlab.evaluation.kv_policies.attention` cuts a forward's
queries into blocks of ``chunk_size`` (the chunked prefill) and hands each block
to :meth:`KVPolicy.attend` together with every key the block may see, already
rotated at its original position (transformers caches keys after RoPE). A
policy that moves a key to another position rotates it by the difference
(:class:`~clexlab.evaluation.kv_policies.rotation.Rotary`), which is exact for
RoPE: rotations compose, and a RoPE attention scaling (YaRN's) is untouched.

The attention itself is plain PyTorch: scores per segment (a set of keys that
share one query variant), one softmax over all segments, values summed back
(:func:`attend_segments`). Grouped-query attention maps query head ``h`` to
key/value head ``h // groups``, as transformers' ``repeat_kv`` does.

Options are checked here, each with one line that names the key
(``eval.kv.top_k must be an integer >= 1 ...``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import torch

from clexlab.evaluation.kv_policies.rotation import Rotary
from clexlab.utils.errors import UserError

KEY_PREFIX = "eval.kv."


@dataclass
class Block:
    """One block of consecutive queries and every key it may see.

    Attributes:
        query: ``[batch, heads, c, head_dim]``, rotated at ``q_pos``.
        keys, values: ``[batch, kv_heads, n, head_dim]``: the cached keys up to the block's
            last query (later ones are in the future), keys rotated at ``k_pos``.
        q_pos: ``[c]`` original positions of the queries (ascending).
        k_pos: ``[n]`` original positions of the keys (ascending; gaps where a key was evicted).
        rotary: rotates heads by position differences with this forward's frequencies.
        scaling: the softmax scale of the model's attention.
        softcap: the attention logit soft-cap (Gemma-2), or None.
        window: the layer's own sliding window (Mistral, Gemma-2 local layers), or None.
        state: this layer's policy state, kept across blocks and forwards of one sequence.
        stats: counters shared by all layers (e.g. TokenSelect's selection-cache hits).
    """

    query: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    q_pos: torch.Tensor
    k_pos: torch.Tensor
    rotary: Rotary
    scaling: float
    softcap: float | None = None
    window: int | None = None
    state: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """``[..., c, m]`` bool: key at ``k_pos`` is causal for the query at ``q_pos`` (and within ``window``)."""
    q = q_pos.unsqueeze(-1)
    k = k_pos.unsqueeze(-2)
    ok = k <= q
    if window:
        ok = ok & (q - k < window)
    return ok


def scores(query: torch.Tensor, keys: torch.Tensor, scaling: float) -> torch.Tensor:
    """float32 ``[batch, kv_heads, groups, c, m]`` logits; query head ``h`` meets kv head ``h // groups``."""
    b, h, c, d = query.shape
    hkv = keys.shape[1]
    # [b, hkv, g*c, d] @ [b, hkv, d, m]: one batched matmul, no copy of the keys per group.
    q = (query * scaling).reshape(b, hkv, (h // hkv) * c, d)
    return torch.matmul(q, keys.transpose(-1, -2)).float().view(b, hkv, h // hkv, c, keys.shape[2])


def attend_segments(
    segments: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], softcap: float | None, dtype: torch.dtype
) -> torch.Tensor:
    """One softmax over several key segments, each with its own logits.

    Args:
        segments: ``(logits [b, hkv, g, c, m_i], values [b, hkv, m_i, d], mask)`` with a bool
            mask broadcastable to the logits (True: attend).
        softcap: Gemma-2's ``c * tanh(logits / c)`` before masking, or None.
        dtype: dtype of the output (the model's).

    Returns:
        ``[batch, c, heads, head_dim]``, transformers' attention-output layout.
    """
    # One softmax over the segments without concatenating them: a shared running maximum,
    # exponentials in place (the logits are this call's own tensors), one normaliser.
    logits = []
    for s, _, mask in segments:
        if softcap:
            s = torch.tanh(s / softcap) * softcap
        logits.append(s.masked_fill_(~mask, float("-inf")))
    peak = torch.stack([s.amax(dim=-1) for s in logits]).amax(dim=0).unsqueeze(-1)
    b, hkv, g, c, _ = peak.shape
    out, total = None, None
    for s, (_, v, _) in zip(logits, segments):
        weights = s.sub_(peak).exp_()
        part_total = weights.sum(dim=-1, keepdim=True)
        total = part_total if total is None else total + part_total
        part = torch.matmul(weights.to(v.dtype).reshape(b, hkv, g * c, weights.shape[-1]), v)
        out = part if out is None else out + part
    out = out / total.reshape(b, hkv, g * c, 1).to(out.dtype)
    return out.view(b, hkv * g, c, out.shape[-1]).transpose(1, 2).to(dtype)


class KVPolicy(ABC):
    """An evaluation-time KV policy: which cached keys each query attends to, and at which positions.

    Subclasses are dataclasses (their fields are the options) and declare:

    * ``name``: the value of ``eval.kv_policy``;
    * ``OPTIONS``: each option's kind: ``("count", minimum)``, ``("choice", values)`` or ``("float", None)``.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, tuple[str, Any]]] = {}
    chunk_size: int

    @classmethod
    def defaults(cls, train_length: int | None) -> dict[str, Any]:
        """Option values used where ``eval.kv.<key>`` is null: the fields' defaults (subclasses make some follow L)."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], train_length: int | None) -> KVPolicy:
        """Build from ``eval.kv`` (None values take :meth:`defaults`)."""
        given = {k: v for k, v in options.items() if v is not None}
        check_options(cls.name, given)
        values = {**cls.defaults(train_length), **given}
        missing = [k for k in cls.OPTIONS if values.get(k) is None]
        if missing:
            raise UserError(f"kv_policy={cls.name} needs {KEY_PREFIX}{missing[0]} (no train length to derive it from)")
        return cls(**{k: values[k] for k in cls.OPTIONS})

    @property
    @abstractmethod
    def budget(self) -> int:
        """Most keys one query attends to."""

    @abstractmethod
    def covers(self, n_tokens: int) -> bool:
        """True when every query of an ``n_tokens`` sequence sees all its past at its own positions (full attention)."""

    def needed(self, k_pos: torch.Tensor, next_pos: int) -> torch.Tensor:
        """Which cached keys any query at ``next_pos`` or later can still attend to (the rest may be evicted)."""
        return torch.ones_like(k_pos, dtype=torch.bool)

    @abstractmethod
    def attend(self, block: Block) -> torch.Tensor:
        """The attention output ``[batch, c, heads, head_dim]`` of one block of queries."""

    def describe(self) -> str:
        """A short label with the budget, e.g. ``streaming(4+124)``."""
        return self.name


def check_options(policy: str, given: Mapping[str, Any]) -> None:
    """One-line errors for an option the policy does not take or a value of the wrong kind."""
    from clexlab.evaluation.kv_policies import policy_class

    cls = policy_class(policy)
    for key, value in given.items():
        if key not in cls.OPTIONS:
            raise UserError(
                f"{KEY_PREFIX}{key} does not apply to kv_policy={policy} (its options: {', '.join(cls.OPTIONS)})"
            )
        kind, arg = cls.OPTIONS[key]
        if kind == "count":
            if isinstance(value, bool) or not isinstance(value, int) or value < arg:
                raise UserError(f"{KEY_PREFIX}{key} must be an integer >= {arg} (tokens), got {value!r}")
        elif kind == "choice":
            if value not in arg:
                raise UserError(f"{KEY_PREFIX}{key} must be one of {list(arg)}, got {value!r}")
        elif kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
            raise UserError(f"{KEY_PREFIX}{key} must be a number, got {value!r}")  # value != value: NaN
