"""Build the transformers causal LM: a tiny LLaMA in code, or a local checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clexlab.utils.checks import check_model_dir

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_tiny_llama(cfg: dict[str, Any], vocab_size: int) -> nn.Module:
    """A randomly initialised LlamaForCausalLM with the sizes in ``cfg``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg.get("num_kv_heads") or cfg["num_heads"],
        max_position_embeddings=cfg["train_length"],
        rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attn_implementation=cfg.get("attn_implementation", "sdpa"),
    )
    return LlamaForCausalLM(config).to(DTYPES[cfg.get("dtype", "float32")])


def load_pretrained(cfg: dict[str, Any], load_weights: bool = True) -> nn.Module:
    """Load ``cfg['path']`` with transformers, local files only, never remote code.

    With ``load_weights=False`` only the architecture is built (the weights
    then come from a clexlab checkpoint).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = check_model_dir(cfg.get("path"), cfg.get("name", "model"))
    dtype = DTYPES[cfg.get("dtype", "float32")]
    attn = cfg.get("attn_implementation", "sdpa")
    if load_weights:
        return AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, trust_remote_code=False, attn_implementation=attn
        )
    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    config._attn_implementation = attn
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_model(cfg: dict[str, Any], vocab_size: int, load_weights: bool = True) -> nn.Module:
    """The causal LM described by the ``model`` config node."""
    model = load_pretrained(cfg, load_weights) if cfg.get("path") else build_tiny_llama(cfg, vocab_size)
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
