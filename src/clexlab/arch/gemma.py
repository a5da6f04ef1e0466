"""Gemma: LLaMA's layout, embeddings scaled by sqrt(hidden), tied head, an explicit head_dim."""

from typing import Any

from clexlab.arch.base import Architecture


class Gemma(Architecture):
    model_type = "gemma"
    config_class = "GemmaConfig"
    causal_lm_class = "GemmaForCausalLM"

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        return {**super().tiny_kwargs(sizes, vocab_size), "tie_word_embeddings": bool(sizes.get("tie_word_embeddings", True))}
