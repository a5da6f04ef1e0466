"""LLaMA (LLaMA-2, Llama-3.x with ``llama3`` scaling, TinyLlama): the defaults of :class:`Architecture`."""

from clexlab.arch.base import Architecture


class Llama(Architecture):
    model_type = "llama"
    config_class = "LlamaConfig"
    causal_lm_class = "LlamaForCausalLM"
