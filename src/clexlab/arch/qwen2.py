"""Qwen2 / Qwen2.5: LLaMA's layout with biased q/k/v projections (long variants carry ``yarn``)."""

from typing import Any

from clexlab.arch.base import Architecture


class Qwen2(Architecture):
    model_type = "qwen2"
    config_class = "Qwen2Config"
    causal_lm_class = "Qwen2ForCausalLM"

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        kwargs = super().tiny_kwargs(sizes, vocab_size)
        kwargs.pop("head_dim", None)  # Qwen2Config derives it from hidden_size / heads
        return kwargs
