"""What clexlab needs to know about one family of transformers causal LMs.

transformers' decoder-only RoPE models share one design (a backbone holding the
token embedding, the decoder layers, a final norm and ONE rotary module whose
``(cos, sin)`` every layer receives, and an LM head beside the backbone), but
the attribute names differ: GPT-NeoX keeps its backbone in ``gpt_neox`` and its
attention in ``attention``; Phi and GPT-NeoX
rotate only part of each head; Gemma-2 soft-caps its logits. An
:class:`Architecture` answers those questions for one ``config.model_type``,
so nothing else in clexlab spells an attribute path.

Adding a family is one file in this package: a subclass with its
``model_type``, its transformers config class and whatever differs from the
defaults below (see ``llama.py`` for the minimal case, ``gpt_neox.py`` for one
that renames everything). The registry (:mod:`clexlab.arch`) finds it.

Pure torch and transformers: no Lightning, Hydra or W&B.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn


class Architecture:
    """One model family: where its parts live and how to build a tiny one.

    Class attributes (override what differs from LLaMA):
        model_type: ``config.model_type`` of the family.
        config_class: transformers config class name (for :meth:`tiny_config`).
        causal_lm_class: transformers ``*ForCausalLM`` class name.
        layers_attr: attribute of the backbone holding the decoder layers.
        attention_attr: attribute of a decoder layer holding its attention.
        norm_attr: attribute of the backbone holding the final norm.
        rotary_attr: attribute of the backbone holding the shared rotary module.
        moe: the family routes tokens through experts (Mixtral, Qwen3-MoE).
        supports_sdpa: transformers runs the family with SDPA (Gemma-2's soft-capped
            attention runs eager only).
        tiny_partial_rotary: the share of each head a model built in code rotates when
            ``model.partial_rotary_factor`` is unset (None: the family rotates whole heads
            and takes no such option).
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[str] = ""
    causal_lm_class: ClassVar[str] = ""
    layers_attr: ClassVar[str] = "layers"
    attention_attr: ClassVar[str] = "self_attn"
    norm_attr: ClassVar[str] = "norm"
    rotary_attr: ClassVar[str] = "rotary_emb"
    moe: ClassVar[bool] = False
    supports_sdpa: ClassVar[bool] = True
    tiny_partial_rotary: ClassVar[float | None] = None

    # ----------------------------------------------------------- the parts
    # The backbone, the embedding and the head come from transformers' own accessors
    # (``base_model``, ``get_input_embeddings``, ``get_output_embeddings``), which follow
    # renames across versions (GPT-NeoX's head was ``embed_out`` before 5.x).
    def backbone(self, model: nn.Module) -> nn.Module:
        """The decoder stack (``LlamaModel``, ``GPTNeoXModel``, ...) of a causal LM (or the backbone itself)."""
        return getattr(model, "base_model", model)

    def backbone_prefix(self, model: nn.Module) -> str:
        """The state-dict prefix of the backbone inside the causal LM (``model.``, ``gpt_neox.``, or empty)."""
        backbone = self.backbone(model)
        if backbone is model:
            return ""
        return next(f"{name}." for name, child in model.named_children() if child is backbone)

    def layers(self, model: nn.Module) -> Sequence[nn.Module]:
        """The decoder layers, in order (FSDP's units)."""
        return list(getattr(self.backbone(model), self.layers_attr))

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        """The attention module of every decoder layer."""
        return [getattr(layer, self.attention_attr) for layer in self.layers(model)]

    def rotary(self, model: nn.Module) -> nn.Module:
        """The backbone's shared rotary module (its output reaches every layer)."""
        backbone = self.backbone(model)
        rotary = getattr(backbone, self.rotary_attr, None)
        if rotary is None:
            raise ValueError(f"{type(model).__name__} has no shared {self.rotary_attr} module; clexlab extends RoPE models")
        return rotary

    def set_rotary(self, model: nn.Module, rotary: nn.Module) -> None:
        """Replace the shared rotary module."""
        setattr(self.backbone(model), self.rotary_attr, rotary)

    def rotary_prefix(self, model: nn.Module) -> str:
        """The state-dict prefix of the rotary module's parameters (``model.rotary_emb.``)."""
        return f"{self.backbone_prefix(model)}{self.rotary_attr}."

    def embeddings(self, model: nn.Module) -> nn.Embedding:
        """The token embedding."""
        return model.get_input_embeddings()

    def lm_head(self, model: nn.Module) -> nn.Linear:
        """The output projection to the vocabulary."""
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(f"{type(model).__name__} has no output projection: clexlab trains causal LMs")
        return head

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm applied to the last hidden states."""
        return getattr(self.backbone(model), self.norm_attr)

    def logit_softcap(self, config: Any) -> float | None:
        """``c`` when the head's logits are soft-capped as ``c * tanh(logits / c)`` (Gemma-2), else None."""
        return None

    # ------------------------------------------------------------ the sizes
    def head_dim(self, config: Any) -> int:
        """Attention head dimension."""
        return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)

    def rope_parameters(self, config: Any) -> dict[str, Any]:
        """The model's own RoPE settings (``rope_parameters``, or the older ``rope_scaling`` + ``rope_theta``)."""
        params = dict(getattr(config, "rope_parameters", None) or {})
        legacy = getattr(config, "rope_scaling", None)
        if not params and isinstance(legacy, dict):
            params = dict(legacy)
        params.setdefault("rope_type", params.pop("type", None) or "default")
        if "rope_theta" not in params and getattr(config, "rope_theta", None) is not None:
            params["rope_theta"] = config.rope_theta
        return params

    def partial_rotary_factor(self, config: Any) -> float:
        """Fraction of each head that is rotated (1 for LLaMA, 0.5 for Phi-2, 0.25 for Pythia)."""
        params = self.rope_parameters(config)
        for value in (params.get("partial_rotary_factor"), getattr(config, "partial_rotary_factor", None)):
            if value is not None:
                return float(value)
        return 1.0

    def rotary_dim(self, config: Any) -> int:
        """Dimensions of each head that RoPE rotates (the first ones); the CLEX state has half as many entries."""
        return int(self.head_dim(config) * self.partial_rotary_factor(config))

    def num_kv_heads(self, config: Any) -> int:
        """Key/value heads (grouped-query attention)."""
        return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)

    def intermediate_size(self, config: Any) -> int:
        """Width of one MLP (one expert's, for MoE families)."""
        return int(config.intermediate_size)

    def experts(self, config: Any) -> tuple[int, int]:
        """``(experts per layer, experts each token uses)``; ``(1, 1)`` for dense families."""
        return (1, 1)

    def gated_mlp(self) -> bool:
        """The MLP is gated (gate, up, down: three matrices) rather than two (up, down)."""
        return True

    # ------------------------------------------------------ tiny models in code
    def tiny_config(self, sizes: dict[str, Any], vocab_size: int) -> Any:
        """A config of this family with the sizes of a ``model`` node (``conf/model/tiny.yaml``).

        Args:
            sizes: ``hidden_size``, ``num_layers``, ``num_heads``, ``num_kv_heads``,
                ``intermediate_size``, ``train_length``, ``rope_theta`` (and
                optionally ``head_dim``, ``tie_word_embeddings``, ``attn_implementation``).
            vocab_size: rows of the embedding.
        """
        config_cls = getattr(importlib.import_module("transformers"), self.config_class)
        config = config_cls(**self.tiny_kwargs(sizes, vocab_size))
        config._attn_implementation = self.attn_implementation(sizes.get("attn_implementation"))
        return config

    def attn_implementation(self, requested: str | None) -> str:
        """The attention implementation to build with: ``requested`` (sdpa by default), eager where SDPA is unsupported."""
        requested = requested or "sdpa"
        return "eager" if requested == "sdpa" and not self.supports_sdpa else requested

    def tiny_kwargs(self, sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
        """Keyword arguments of :attr:`config_class` for :meth:`tiny_config` (LLaMA's names)."""
        kwargs = {
            "vocab_size": int(vocab_size),
            "hidden_size": int(sizes["hidden_size"]),
            "intermediate_size": int(sizes["intermediate_size"]),
            "num_hidden_layers": int(sizes["num_layers"]),
            "num_attention_heads": int(sizes["num_heads"]),
            "num_key_value_heads": int(sizes.get("num_kv_heads") or sizes["num_heads"]),
            "max_position_embeddings": int(sizes["train_length"]),
            "rope_parameters": {"rope_type": "default", "rope_theta": float(sizes.get("rope_theta", 10000.0))},
            "tie_word_embeddings": bool(sizes.get("tie_word_embeddings", False)),
            # Families whose config has no head_dim drop it (it is hidden_size / heads there).
            "head_dim": int(sizes.get("head_dim") or int(sizes["hidden_size"]) // int(sizes["num_heads"])),
        }
        return kwargs

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_type={self.model_type!r})"
