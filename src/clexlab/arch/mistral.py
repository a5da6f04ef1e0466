"""Mistral: LLaMA's layout; the v0.1 checkpoints add a 4096-token sliding window (their config says so)."""

from typing import Any

from clexlab.arch.base import Architecture


class Mistral(Architecture):
    model_type = "mistral"
    config_class = "MistralConfig"
    causal_lm_class = "MistralForCausalLM"

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        # Tiny models attend to their whole context, like Mistral v0.2 and later.
        return {**super().tiny_kwargs(sizes, vocab_size), "sliding_window": None}
