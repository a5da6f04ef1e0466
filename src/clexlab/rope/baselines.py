"""The RoPE extensions CLEX is compared with, built on transformers' own rope utilities.

Each method is expressed as ``config.rope_parameters`` for transformers'
rope init functions (``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS``)
and installed as the model class's own rotary module, so the frequencies are
exactly the ones transformers computes, not a re-derivation:

* ``none``: plain RoPE (``rope_type: default``).
* ``pi``: position interpolation, positions divided by ``factor`` (``linear``).
* ``ntk``: static NTK-aware scaling, ``base' = base * factor^(d/(d-2))``;
  transformers has no static NTK type, so this is ``default`` with that base.
* ``dynamic_ntk``: NTK-aware scaling chosen per forward from the current length
  (``dynamic``): ``alpha = factor * n / L - (factor - 1)`` once ``n > L``.
* ``yarn``: YaRN with ``original_max_position_embeddings = L`` and its
  attention temperature (``yarn``).

At ``factor = 1`` every method equals plain RoPE (``dynamic_ntk`` up to L,
beyond which it keeps adapting to the length by design).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from clexlab.rope.install import find_rotary, head_dim_of, rope_base

BASELINES = ("none", "pi", "ntk", "dynamic_ntk", "yarn")


def rope_parameters_for(
    method: str, base: float, head_dim: int, train_length: int, factor: float = 1.0, **options: Any
) -> dict[str, Any]:
    """transformers ``rope_parameters`` implementing ``method`` for a model trained at ``train_length``.

    Args:
        method: one of :data:`BASELINES`.
        base: the model's RoPE base (``rope_theta``).
        head_dim: attention head dimension.
        train_length: the length L the model was trained at.
        factor: the method's scale factor (target length / L for pi, ntk, yarn).
        options: extra keys for transformers (e.g. ``beta_fast``, ``beta_slow`` for yarn).
    """
    if method not in BASELINES:
        raise ValueError(f"unknown RoPE method {method!r}; choose one of {BASELINES}")
    if factor < 1:
        raise ValueError(f"rope.factor must be >= 1, got {factor}")
    if method == "none":
        return {"rope_type": "default", "rope_theta": base}
    if method == "pi":
        return {"rope_type": "linear", "rope_theta": base, "factor": float(factor)}
    if method == "ntk":
        return {"rope_type": "default", "rope_theta": base * factor ** (head_dim / (head_dim - 2))}
    if method == "dynamic_ntk":
        return {"rope_type": "dynamic", "rope_theta": base, "factor": float(factor)}
    extras = {k: v for k, v in options.items() if v is not None}
    return {
        "rope_type": "yarn",
        "rope_theta": base,
        "factor": float(factor),
        "original_max_position_embeddings": int(train_length),
        **extras,
    }


def install_baseline(model: nn.Module, method: str, train_length: int, factor: float = 1.0, **options: Any) -> nn.Module:
    """Rebuild the model's rotary module for ``method`` and record it in ``model.config``.

    The new module is the class transformers already uses for this model,
    constructed from a config whose ``rope_parameters`` describe the method,
    and ``max_position_embeddings`` is set to L (dynamic NTK and YaRN read it
    as the original length).
    """
    old = find_rotary(model)
    config = model.config
    # ntk rewrites rope_theta: keep the pretrained base so a second install starts from it.
    if not hasattr(config, "clexlab_pretrained_rope_theta"):
        config.clexlab_pretrained_rope_theta = rope_base(config)
    config.rope_parameters = rope_parameters_for(
        method, config.clexlab_pretrained_rope_theta, head_dim_of(config), train_length, factor, **options
    )
    config.max_position_embeddings = int(train_length)
    rotary = type(old)(config=copy.deepcopy(config))
    device = old.inv_freq.device if hasattr(old, "inv_freq") else None
    if device is not None and device.type != "meta":
        rotary = rotary.to(device)
    getattr(model, "model", model).rotary_emb = rotary
    return rotary
