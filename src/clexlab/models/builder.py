"""Build the transformers causal LM: a tiny model of any supported family in code, or a local checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from clexlab.utils.checks import check_model_dir
from clexlab.utils.errors import UserError, describe, hf_config_errors, weights_errors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# `auto`: a checkpoint keeps the dtype its config.json records (bf16 for LLaMA-2), so a 7B
# model never exists as a float32 copy on the way; a model built in code has no such record.
DTYPE_CHOICES = (*DTYPES, "auto")


def resolve_dtype(name: str | None, recorded: Any = None) -> torch.dtype:
    """The torch dtype for ``model.dtype``.

    Args:
        name: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
        recorded: the checkpoint's own dtype (a torch dtype or its name), used by ``auto``;
            None (a model built in code, or a config without one) means float32.
    """
    name = name or "float32"
    if name == "auto":
        if isinstance(recorded, torch.dtype):
            return recorded
        return DTYPES.get(str(recorded).removeprefix("torch."), torch.float32) if recorded else torch.float32
    if name not in DTYPES:
        raise UserError(f"model.dtype must be one of {list(DTYPE_CHOICES)}, got {name!r}")
    return DTYPES[name]


def model_vocab_size(cfg: dict[str, Any], tokenizer_vocab: int | None) -> int:
    """Rows of the embedding of a model built in code: ``model.vocab_size``, else the tokenizer's.

    A larger ``model.vocab_size`` than the tokenizer needs is allowed (benchmarks want the
    real 32000-row embedding and LM head with byte tokens); a smaller one would index out of range.
    """
    configured = cfg.get("vocab_size")
    if configured is None:
        if tokenizer_vocab is None:
            raise UserError(f"model={cfg.get('name', 'model')} needs model.vocab_size=... (no tokenizer to take it from)")
        return int(tokenizer_vocab)
    if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
        raise UserError(f"model.vocab_size must be a positive integer or null, got {configured!r}")
    if tokenizer_vocab is not None and configured < tokenizer_vocab:
        raise UserError(
            f"model.vocab_size={configured} is smaller than the tokenizer's vocabulary ({tokenizer_vocab}): "
            "raise it or set model.vocab_size=null"
        )
    return configured


def tiny_config(cfg: dict[str, Any], vocab_size: int):
    """The transformers config of a model built in code: family ``model.arch`` with the sizes in ``cfg``.

    ``model.rope_parameters`` (e.g. Llama-3.1's ``llama3`` scaling in a recipe) and
    ``model.config_overrides`` (any other key of the family's config) are applied on top.
    """
    from clexlab.arch import get_architecture

    arch = get_architecture(cfg.get("arch") or "llama")
    try:  # transformers' config validators refuse some shapes (hidden_size not a multiple of the heads, ...)
        config = arch.tiny_config(cfg, vocab_size)
        if cfg.get("rope_parameters"):
            config.rope_parameters = {**arch.rope_parameters(config), **dict(cfg["rope_parameters"])}
        for key, value in dict(cfg.get("config_overrides") or {}).items():
            setattr(config, key, value)
    except hf_config_errors() as err:
        raise UserError(
            f"transformers refuses this model={cfg.get('name', 'model')} ({describe(err)}): fix model.hidden_size, "
            "num_heads, num_kv_heads, num_layers, intermediate_size, rope_parameters or config_overrides"
        ) from err
    return config


def load_hf_config(path: str | Path):
    """transformers' config of a local model directory; a config its validators refuse is one line.

    Raises:
        UserError: naming ``config.json`` and what transformers said about it.
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except hf_config_errors() as err:
        raise UserError(
            f"transformers refuses {Path(path) / 'config.json'} ({describe(err)}): fix that key in config.json "
            "or point model.path at another model"
        ) from err


def _weights_error(path: Path, err: BaseException) -> UserError:
    return UserError(
        f"model.path={path}: transformers cannot load its weights ({describe(err)}): the weight files are damaged, "
        "truncated or do not match config.json; copy or re-save them"
    )


def _check_loaded(path: Path, loading: dict[str, Any]) -> None:
    """Refuse weights that leave tensors of the model unset (transformers would initialise them at random)."""
    # rotary_emb: buffers (inv_freq) some checkpoints carry and some do not; rebuilt from config.json anyway.
    missing = sorted(k for k in loading.get("missing_keys", ()) if "rotary_emb" not in k)
    if missing:
        raise UserError(
            f"model.path={path}: its weights lack {len(missing)} tensors of the model config.json describes "
            f"(e.g. {missing[:2]}), which would start from random values: use the weights saved with this config.json"
        )


def build_tiny(cfg: dict[str, Any], vocab_size: int) -> nn.Module:
    """A randomly initialised causal LM of family ``model.arch`` (llama by default) with the sizes in ``cfg``.

    ``vocab_size`` is the tokenizer's; ``cfg['vocab_size']``, when set, overrides it
    (see :func:`model_vocab_size`).
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(cfg, model_vocab_size(cfg, vocab_size))
    try:
        model = AutoModelForCausalLM.from_config(config)
    except hf_config_errors() as err:
        raise UserError(f"transformers cannot build model={cfg.get('name', 'model')} ({describe(err)}): fix the model.* sizes") from err
    return model.to(resolve_dtype(cfg.get("dtype")))


def load_pretrained(cfg: dict[str, Any], load_weights: bool = True) -> nn.Module:
    """Load ``cfg['path']`` with transformers, local files only, never remote code.

    With ``load_weights=False`` only the architecture is built (the weights
    then come from a clexlab checkpoint). ``model.dtype: auto`` keeps the
    checkpoint's recorded dtype: transformers then reads the shards straight
    into parameters of that dtype, never through a float32 copy.
    """
    from transformers import AutoModelForCausalLM

    from clexlab.arch import get_architecture

    path = check_model_dir(cfg.get("path"), cfg.get("name", "model"))
    name = cfg.get("dtype") or "float32"
    config = load_hf_config(path)
    # An unsupported family is refused here, in one line, before any weight is read.
    attn = get_architecture(config.model_type).attn_implementation(cfg.get("attn_implementation"))
    if load_weights:
        dtype = "auto" if name == "auto" else resolve_dtype(name)
        try:
            model, loading = AutoModelForCausalLM.from_pretrained(
                str(path), config=config, dtype=dtype, local_files_only=True, trust_remote_code=False,
                attn_implementation=attn, output_loading_info=True,
            )
        except weights_errors() as err:
            raise _weights_error(path, err) from err
        _check_loaded(path, loading)
        return model
    try:
        return AutoModelForCausalLM.from_config(
            config, dtype=resolve_dtype(name, getattr(config, "dtype", None)), attn_implementation=attn
        )
    except hf_config_errors() as err:
        raise UserError(f"transformers cannot build the model of {path / 'config.json'} ({describe(err)}): fix config.json") from err


def build_model(cfg: dict[str, Any], vocab_size: int, load_weights: bool = True) -> nn.Module:
    """The causal LM described by the ``model`` config node."""
    model = load_pretrained(cfg, load_weights) if cfg.get("path") else build_tiny(cfg, vocab_size)
    if cfg.get("gradient_checkpointing"):
        # transformers 5.24 renamed gradient_checkpointing_enable (still there, deprecated) and its argument;
        # take the new name where it exists.
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def build_skeleton(cfg: dict[str, Any], tokenizer_vocab: int | None = None) -> nn.Module:
    """The model of ``cfg`` on the meta device: shapes and parameter counts, no memory, no weights read.

    The architecture comes from ``config.json`` in ``cfg['path']`` when one is set
    (the checkpoint's shapes win), otherwise from the sizes in ``cfg``. SDPA is
    used whatever ``attn_implementation`` says, so planning a flash-attention run
    needs no flash-attention package here.
    """
    from transformers import AutoModelForCausalLM

    from clexlab.arch import get_architecture

    path = cfg.get("path")
    if path and str(path) != "???":
        config = load_hf_config(check_model_dir(path, cfg.get("name", "model")))
        dtype = resolve_dtype(cfg.get("dtype"), getattr(config, "dtype", None))
    else:
        config = tiny_config(cfg, model_vocab_size(cfg, tokenizer_vocab))
        dtype = resolve_dtype(cfg.get("dtype"))
    attn = get_architecture(config.model_type).attn_implementation("sdpa")
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    except hf_config_errors() as err:
        raise UserError(f"transformers cannot build model={cfg.get('name', 'model')} ({describe(err)}): fix the model.* sizes") from err
