"""Put a RoPE variant into a transformers causal LM."""

from __future__ import annotations

from torch import nn

from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.fused_rotary import patch_rotary_application
from clexlab.rope.generation import enable_cached_generation


def rope_base(config) -> float:
    """RoPE base of a transformers config, old (``rope_theta``) or new (``rope_parameters``) style."""
    params = getattr(config, "rope_parameters", None) or {}
    base = params.get("rope_theta", getattr(config, "rope_theta", None))
    if base is None:
        raise ValueError("the model config has no rope_theta: is this a RoPE model?")
    return float(base)


def head_dim_of(config) -> int:
    """Attention head dimension of a transformers config."""
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def find_rotary(model: nn.Module) -> nn.Module:
    """The backbone's shared rotary module (``model.model.rotary_emb`` for Llama)."""
    backbone = getattr(model, "model", model)
    if not hasattr(backbone, "rotary_emb"):
        raise ValueError(f"{type(model).__name__} has no shared rotary_emb module; CLEX needs a RoPE model")
    return backbone.rotary_emb


def install_clex(model: nn.Module, train_length: int, max_scale: int, **options) -> CLEXRotaryEmbedding:
    """Replace the model's rotary embedding with a CLEX one and return it.

    Head dimension and RoPE base come from the model's config; ``options``
    (``param_factor``, ``act``, ``time_dt``, ``solver``) go to
    :class:`CLEXRotaryEmbedding`. The new module lives on the device of the old
    ``inv_freq`` buffer, in float32 (the ODE weights are tiny and precision-sensitive).
    ``model.generate`` then stays exact across scale changes (see
    :mod:`clexlab.rope.generation`), and training sends the frequency gradient
    through :mod:`clexlab.rope.fused_rotary` where the attention allows it.
    """
    old = find_rotary(model)
    device = old.inv_freq.device if hasattr(old, "inv_freq") else None
    rope = CLEXRotaryEmbedding(
        head_dim=head_dim_of(model.config),
        base=rope_base(model.config),
        train_length=train_length,
        max_scale=max_scale,
        **options,
    )
    if device is not None and device.type != "meta":
        rope = rope.to(device)
    getattr(model, "model", model).rotary_emb = rope
    # One angle gradient per layer instead of autograd through cos and sin (same values).
    rope.fused_rotary = patch_rotary_application(model)
    enable_cached_generation(model)
    return rope
