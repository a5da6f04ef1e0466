"""Qwen3-MoE: Qwen3's attention with a sparse mixture of experts in every layer."""

from typing import Any

from clexlab.arch.base import Architecture


class Qwen3Moe(Architecture):
    model_type = "qwen3_moe"
    config_class = "Qwen3MoeConfig"
    causal_lm_class = "Qwen3MoeForCausalLM"
    moe = True

    def experts(self, config: Any) -> tuple[int, int]:
        return int(config.num_experts), int(config.num_experts_per_tok)

    def intermediate_size(self, config: Any) -> int:
        return int(config.moe_intermediate_size)

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        kwargs = super().tiny_kwargs(sizes, vocab_size)
        kwargs.pop("head_dim", None)
        return {
            **kwargs,
            "moe_intermediate_size": int(sizes["intermediate_size"]),
            "num_experts": int(sizes.get("num_experts") or 4),
            "num_experts_per_tok": int(sizes.get("experts_per_token") or 2),
        }
