"""Phi-1/1.5/2: rotates only part of each head (``partial_rotary_factor`` 0.5 for Phi-2), ungated MLP, biased head."""

from typing import Any

from clexlab.arch.base import Architecture


class Phi(Architecture):
    model_type = "phi"
    config_class = "PhiConfig"
    tiny_partial_rotary = 0.5
    causal_lm_class = "PhiForCausalLM"
    norm_attr = "final_layernorm"

    def gated_mlp(self) -> bool:
        return False

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        kwargs = super().tiny_kwargs(sizes, vocab_size)
        kwargs.pop("head_dim", None)
        kwargs["rope_parameters"]["partial_rotary_factor"] = float(sizes.get("partial_rotary_factor") or self.tiny_partial_rotary)
        # transformers 5.0's PhiConfig sets no pad_token_id attribute unless given one, and PhiModel reads it.
        return {**kwargs, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "pad_token_id": None}
