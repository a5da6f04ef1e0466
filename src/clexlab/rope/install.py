"""Put CLEX into a transformers causal LM of any supported family."""

from __future__ import annotations

from torch import nn

from clexlab.arch import architecture_of
from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.fused_rotary import patch_rotary_application
from clexlab.rope.generation import enable_cached_generation
from clexlab.rope.own import own_rope


def find_rotary(model: nn.Module) -> nn.Module:
    """The backbone's shared rotary module (``model.model.rotary_emb`` for Llama)."""
    return architecture_of(model).rotary(model)


def install_clex(model: nn.Module, train_length: int, max_scale: int, **options) -> CLEXRotaryEmbedding:
    """Replace the model's rotary embedding with a CLEX one and return it.

    CLEX starts from the model's own RoPE (:func:`clexlab.rope.own.own_rope`:
    its frequencies over its rotary dimension and its attention scaling,
    whatever its ``rope_type``), so the logits at t = 1 do not move. ``options``
    (``param_factor``, ``act``, ``time_dt``, ``solver``,
    ``embedding_log_inv_freq``) go to :class:`CLEXRotaryEmbedding`. The new
    module lives on the device of the model's parameters, in float32 (the ODE
    weights are tiny and precision-sensitive). ``model.generate`` then stays
    exact across scale changes (see :mod:`clexlab.rope.generation`), and
    training sends the frequency gradient through
    :mod:`clexlab.rope.fused_rotary` where the attention allows it.
    """
    arch = architecture_of(model)
    own = own_rope(model)
    rope = CLEXRotaryEmbedding(own.rotary_dim, own.base, train_length, max_scale, own=own, **options)
    device = next((p.device for p in arch.backbone(model).parameters()), None)
    if device is not None and device.type != "meta":
        rope = rope.to(device)
    rope.train(model.training)  # a model in eval mode gets a rotary in eval mode
    arch.set_rotary(model, rope)
    # One angle gradient per layer instead of autograd through cos and sin (same values).
    rope.fused_rotary = patch_rotary_application(model)
    enable_cached_generation(model)
    return rope
