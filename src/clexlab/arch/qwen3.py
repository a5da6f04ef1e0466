"""Qwen3: LLaMA's layout with per-head q/k norms and an explicit head_dim."""

from clexlab.arch.base import Architecture


class Qwen3(Architecture):
    model_type = "qwen3"
    config_class = "Qwen3Config"
    causal_lm_class = "Qwen3ForCausalLM"
