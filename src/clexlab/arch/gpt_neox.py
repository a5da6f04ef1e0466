"""GPT-NeoX / Pythia: backbone ``gpt_neox``, attention ``attention``, LayerNorms, 25 % of each head rotated."""

from typing import Any

from clexlab.arch.base import Architecture


class GPTNeoX(Architecture):
    model_type = "gpt_neox"
    config_class = "GPTNeoXConfig"
    tiny_partial_rotary = 0.25
    causal_lm_class = "GPTNeoXForCausalLM"
    attention_attr = "attention"
    norm_attr = "final_layer_norm"

    def num_kv_heads(self, config: Any) -> int:
        return int(config.num_attention_heads)

    def gated_mlp(self) -> bool:
        return False

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        kwargs = super().tiny_kwargs(sizes, vocab_size)
        for key in ("head_dim", "num_key_value_heads"):
            kwargs.pop(key, None)
        kwargs["rope_parameters"]["partial_rotary_factor"] = float(sizes.get("partial_rotary_factor") or self.tiny_partial_rotary)
        return {**kwargs, "hidden_dropout": 0.0, "attention_dropout": 0.0}
