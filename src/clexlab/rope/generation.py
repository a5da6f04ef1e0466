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

How it plugs in, using the libraries' extension points only:

* :class:`CLEXCache` is a transformers ``DynamicCache`` that also holds the
  token ids and positions it caches, the scale they were computed at, and how
  many refills it did; beam search reorders that history through its own
  ``reorder_cache``.
* A torch forward pre-hook on the backbone finds the cache among the forward's
  keyword arguments by its type, whatever transformers calls the argument
  (``past_key_values`` up to 5.23, ``cache`` from 5.24). A plain
  ``DynamicCache`` handed in empty, as ``generate`` does, is adopted: the
  forward runs on a :class:`CLEXCache` instead, which the model returns and
  ``generate`` carries on with (it also stands in whenever the plain one comes
  back). When the scale of the incoming step differs from the cache's, the
  hook empties the cache and feeds the whole history instead of the new tokens;
  ``generate`` reads only the last position's logits, so it needs no change.
* Anything the hook cannot follow fails loudly: a backbone whose forward takes
  neither argument name (at install time), a non-empty cache it did not build,
  a cache type other than ``DynamicCache``, and ``inputs_embeds`` (which cannot
  be replayed).

With ``clex.log_scale`` on, the query scale also moves with every token, so
cached generation is approximate there (as in the released code).
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import Cache

#: The names transformers has used for the KV-cache argument of a backbone's forward.
CACHE_ARGUMENTS = ("cache", "past_key_values")
_HOOK_ATTR = "_clexlab_generation_hook"


class CLEXCache(DynamicCache):
    """A ``DynamicCache`` that remembers what it holds, so CLEX can refill it when the scale changes.

    Attributes:
        history_ids: ``[batch, n]`` token ids of every cached position (None when empty).
        history_positions: ``[batch, n]`` their position ids.
        scale: the CLEX scale ``t`` the cached keys and values were computed at.
        refills: how many times the history was recomputed after a scale change.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_args = (args, kwargs)
        self.history_ids: torch.Tensor | None = None
        self.history_positions: torch.Tensor | None = None
        self.scale: float | None = None
        self.refills = 0

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the cached keys and values for beam search, and the kept history with them."""
        super().reorder_cache(beam_idx)
        for name in ("history_ids", "history_positions"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, beam_idx.to(value.device)))

    def _empty(self) -> None:
        """Drop every cached key and value.

        ``reset()`` zeroes the tensors in place on transformers < 5.24 (the
        length stays) and ``crop`` changed meaning in 5.x, so the layers are
        rebuilt with ``DynamicCache``'s own constructor instead.
        """
        args, kwargs = self._init_args
        DynamicCache.__init__(self, *args, **kwargs)
        if self.get_seq_length() != 0:
            raise RuntimeError("CLEXCache could not empty its layers: this transformers version is not supported")

    def step(self, input_ids: torch.Tensor, positions: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Record a forward's tokens; return the ``(ids, positions)`` the forward must run on.

        The incoming tokens when the cache was computed at ``scale``; the whole
        history (the cache emptied first) when it was computed at another one.
        """
        cached = self.get_seq_length()
        if cached == 0 or self.history_ids is None:
            history_ids, history_positions = input_ids, positions
        else:
            history_ids = torch.cat([self.history_ids, input_ids], dim=1)
            history_positions = torch.cat([self.history_positions, positions], dim=1)
        if cached > 0 and self.scale != scale:
            # Everything cached was computed under the old scale: recompute it all.
            self._empty()
            self.refills += 1
            input_ids, positions = history_ids, history_positions
        self.history_ids, self.history_positions, self.scale = history_ids, history_positions, scale
        return input_ids, positions


def cache_argument(module: nn.Module) -> str:
    """The name the backbone's forward takes the KV cache under (``cache`` or ``past_key_values``).

    Raises:
        RuntimeError: when it takes neither: this transformers version passes the
            cache in a way clexlab does not know, so CLEX generation could not stay exact.
    """
    backbone = getattr(module, "base_model", module)
    params = inspect.signature(backbone.forward).parameters
    for name in CACHE_ARGUMENTS:
        if name in params:
            return name
    import transformers

    raise RuntimeError(
        f"{type(backbone).__name__}.forward (transformers {transformers.__version__}) takes none of {CACHE_ARGUMENTS}: "
        "clexlab cannot keep CLEX generation exact with this version; install the transformers range pyproject.toml allows"
    )


# Plain caches that generate() (or a user) handed in empty, and the CLEXCache standing in for each.
_ADOPTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# The cache argument's name per backbone class (read once from its forward's signature).
_ARGUMENT: dict[type, str] = {}


def _clex_cache(backbone: nn.Module, kwargs: dict[str, Any], name: str) -> tuple[str, CLEXCache] | None:
    """The CLEXCache this forward runs on (adopting a plain empty one), or None without a cache."""
    found = [(key, value) for key, value in kwargs.items() if isinstance(value, Cache)]
    if len(found) > 1:
        raise RuntimeError(f"CLEX generation: the forward received several caches ({[k for k, _ in found]})")
    use_cache = kwargs.get("use_cache")
    if use_cache is None:
        use_cache = getattr(backbone.config, "use_cache", False)
    if not found:
        if not use_cache:
            return None
        # The backbone would build a plain DynamicCache itself: build the CLEX one instead.
        return name, CLEXCache(config=backbone.config)
    key, cache = found[0]
    if isinstance(cache, CLEXCache):
        return key, cache
    if cache in _ADOPTED:
        return key, _ADOPTED[cache]
    if type(cache) is not DynamicCache:
        raise RuntimeError(
            f"CLEX generation keeps a DynamicCache exact across scale changes, not a {type(cache).__name__}: "
            "use the default cache (no cache_implementation) or pass clexlab.rope.generation.CLEXCache()"
        )
    if cache.get_seq_length() > 0:
        raise RuntimeError(
            "CLEX generation got a non-empty cache it did not fill, so it cannot refill it when the scale changes: "
            "start from an empty cache or pass clexlab.rope.generation.CLEXCache()"
        )
    adopted = _ADOPTED[cache] = CLEXCache(config=backbone.config)
    return key, adopted


def _refresh_cache_on_scale_change(backbone: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    from clexlab.arch import architecture_of

    rope = architecture_of(backbone).rotary(backbone)
    if getattr(rope, "_scale_override", None) is not None:
        return None  # an explicitly fixed scale (training) never changes mid-request
    name = _ARGUMENT.get(type(backbone)) or _ARGUMENT.setdefault(type(backbone), cache_argument(backbone))
    found = _clex_cache(backbone, kwargs, name)
    if found is None:
        return None
    key, cache = found
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
    scale = rope.scale_for_length(int(positions.max().item()) + 1)
    ids, positions = cache.step(input_ids, positions, scale)
    # Drop any other (None) spelling of the cache argument: one name reaches transformers.
    kwargs = {k: v for k, v in kwargs.items() if k not in CACHE_ARGUMENTS or k == key}
    kwargs.update({key: cache, "input_ids": ids, "position_ids": positions})
    if kwargs.get("cache_position") is not None:  # transformers < 5.24 also passes the cache slots
        start = cache.get_seq_length()
        kwargs["cache_position"] = torch.arange(start, start + ids.shape[1], device=ids.device)
    return args, kwargs


def enable_cached_generation(model: nn.Module) -> None:
    """Install the scale-change refresh on ``model``'s backbone (idempotent).

    Raises:
        RuntimeError: the backbone's forward takes no cache argument clexlab knows.
    """
    from clexlab.arch import architecture_of

    backbone = architecture_of(model).backbone(model)
    _ARGUMENT[type(backbone)] = cache_argument(backbone)  # fails here, at install, on an unknown interface
    if getattr(backbone, _HOOK_ATTR, None) is None:
        setattr(backbone, _HOOK_ATTR, backbone.register_forward_pre_hook(_refresh_cache_on_scale_change, with_kwargs=True))
