"""Gemma-2: Gemma with alternating sliding/full attention and soft-capped attention and output logits."""

from typing import Any

from clexlab.arch.gemma import Gemma


class Gemma2(Gemma):
    model_type = "gemma2"
    config_class = "Gemma2Config"
    causal_lm_class = "Gemma2ForCausalLM"
    supports_sdpa = False

    def logit_softcap(self, config: Any) -> float | None:
        cap = getattr(config, "final_logit_softcapping", None)
        return float(cap) if cap else None

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        kwargs = super().tiny_kwargs(sizes, vocab_size)
        head_dim = kwargs["head_dim"]
        # The window covers every tiny context, so the alternating layers all see the whole sequence.
        return {**kwargs, "head_dim": head_dim, "query_pre_attn_scalar": head_dim, "sliding_window": 1 << 20}
