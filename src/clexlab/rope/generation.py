"""Cache-consistent generation with CLEX through transformers' ``generate``.

CLEX picks the scale from the total length, ``t = ceil(n / L)``. Keys and
values cached while ``t`` was smaller were computed with other frequencies,
and not only the first layer's keys: every deeper layer's keys and values
went through attention under the old ``t``. Re-rotating the cached keys (the
released code's approach, O(n) per token) therefore does not reproduce what a
full recomputation at the new length computes.

What is exact, and cheap: within one value of ``t`` the cache is exactly what a
full recomputation would produce (attention is causal and the frequencies do
not change), so the cache is kept while ``t`` stays the same and the whole
history is recomputed once when ``t`` changes. That is at most ``t_max - 1``
refills per request, each one prefill of the tokens so far; every other step
is an ordinary cached step.

The mechanism is a forward pre-hook on the backbone (``LlamaModel``): it keeps
the token ids and positions of everything the cache holds, and when the scale
of the incoming step differs from the cache's, it empties the cache and feeds
the whole history instead of the new tokens. ``generate`` only reads the last
position's logits, so it needs no change. Beam reordering of the cache is
followed. With ``clex.log_scale`` on, the query scale also moves with every
token, so cached generation is approximate there (as in the released code).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_STATE = "_clexlab_history"


def _reorder_with_history(cache: Any) -> None:
    """Make ``cache.reorder_cache`` (beam search) reorder the kept history too."""
    original = cache.reorder_cache

    def reorder_cache(beam_idx: torch.LongTensor) -> None:
        original(beam_idx)
        state = getattr(cache, _STATE)
        for key in ("ids", "positions"):
            if state[key] is not None:
                state[key] = state[key].index_select(0, beam_idx.to(state[key].device))

    cache.reorder_cache = reorder_cache


def _refresh_cache_on_scale_change(backbone: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    cache = kwargs.get("past_key_values")
    if cache is None or kwargs.get("use_cache") is False:
        return None
    rope = backbone.rotary_emb
    if getattr(rope, "_scale_override", None) is not None:
        return None  # an explicitly fixed scale never changes mid-request
    if args:  # normalise positional input_ids into kwargs
        kwargs = {**kwargs, "input_ids": args[0]}
        args = ()
    input_ids = kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("CLEX cached generation needs input_ids (inputs_embeds cannot be replayed when t changes)")
    cached = cache.get_seq_length()
    positions = kwargs.get("position_ids")
    if positions is None:
        positions = torch.arange(cached, cached + input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    positions = positions.expand(input_ids.shape[0], -1)
    if not hasattr(cache, _STATE):
        setattr(cache, _STATE, {"ids": None, "positions": None, "t": None})
        _reorder_with_history(cache)
    state = getattr(cache, _STATE)
    if cached == 0:
        history_ids, history_positions = input_ids, positions
    else:
        history_ids = torch.cat([state["ids"], input_ids], dim=1)
        history_positions = torch.cat([state["positions"], positions], dim=1)
    t = rope.scale_for_length(int(positions.max().item()) + 1)
    if cached > 0 and state["t"] != t:
        # The scale moved: everything cached was computed under the old one.
        cache.reset()
        input_ids, positions = history_ids, history_positions
    state.update(ids=history_ids, positions=history_positions, t=t)
    return args, {**kwargs, "input_ids": input_ids, "position_ids": positions}


def enable_cached_generation(model: nn.Module) -> None:
    """Install the scale-change refresh on ``model``'s backbone (idempotent)."""
    backbone = getattr(model, "model", model)
    if getattr(backbone, "_clexlab_generation_hook", None) is None:
        backbone._clexlab_generation_hook = backbone.register_forward_pre_hook(
            _refresh_cache_on_scale_change, with_kwargs=True
        )
