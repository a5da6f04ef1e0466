"""Phi-3 / Phi-3.5 / Phi-4-mini: fused qkv and gate-up projections; long variants carry ``longrope``."""

from typing import Any

from clexlab.arch.base import Architecture


class Phi3(Architecture):
    model_type = "phi3"
    config_class = "Phi3Config"
    causal_lm_class = "Phi3ForCausalLM"

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        kwargs = super().tiny_kwargs(sizes, vocab_size)
        kwargs.pop("head_dim", None)
        return {**kwargs, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "pad_token_id": 0}
