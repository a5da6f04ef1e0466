"""CLEX's optional attention log-scaling: queries times ``log(n) / log(L)``.

With ``log_scale`` on, the released CLEX code multiplies the queries by the
log of the key length over the log of the training length, sharpening
attention as the context grows (the same idea as YaRN's temperature). Here it
is an attention function registered with transformers that wraps the model's
own implementation (sdpa, eager, flash), so no model code is copied.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

NAME = "clex_log_scale"


def log_scale_factor(key_length: int, train_length: int) -> float:
    """``log(key_length) / log(train_length)`` (1 at the training length)."""
    return math.log(max(key_length, 2)) / math.log(max(train_length, 2))


def log_scaled_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, *args, **kwargs):
    """Scale the queries, then run the model's base attention implementation."""
    config = module.config
    base = ALL_ATTENTION_FUNCTIONS[config.clex_base_attn_implementation]
    factor = log_scale_factor(key.shape[-2], config.clex_log_scale_length)
    return base(module, query * factor, key, *args, **kwargs)


def enable_log_scale(model: nn.Module, train_length: int) -> None:
    """Route the model's attention through :func:`log_scaled_attention`."""
    config = model.config
    base = config._attn_implementation or "sdpa"
    if base == NAME:
        return
    AttentionInterface.register(NAME, log_scaled_attention)
    # The causal mask must be built in the format the wrapped implementation expects.
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS[base])
    config.clex_base_attn_implementation = base
    config.clex_log_scale_length = int(train_length)
    model.set_attn_implementation(NAME)
