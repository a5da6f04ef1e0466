"""Mixtral: Mistral's attention with a sparse mixture of experts as MLP (8 experts, 2 per token)."""

from typing import Any

from clexlab.arch.base import Architecture


class Mixtral(Architecture):
    model_type = "mixtral"
    config_class = "MixtralConfig"
    causal_lm_class = "MixtralForCausalLM"
    moe = True

    def experts(self, config: Any) -> tuple[int, int]:
        return int(config.num_local_experts), int(config.num_experts_per_tok)

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        return {
            **super().tiny_kwargs(sizes, vocab_size),
            "sliding_window": None,
            "num_local_experts": int(sizes.get("num_experts") or 4),
            "num_experts_per_tok": int(sizes.get("experts_per_token") or 2),
        }
