"""Checks that run before anything heavy is imported, so bad input fails in seconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clexlab.utils.errors import UserError
from clexlab.utils.schema import validate_config, validate_node

# model.dtype values (clexlab.models.builder maps them; `auto` = a checkpoint's own dtype).
# Spelled out here so the check runs before torch/transformers are imported.
DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")


def check_model_dir(path: str | None, name: str = "model") -> Path:
    """Validate a local Hugging Face model directory, or raise a one-line :class:`UserError`."""
    if not path or str(path) == "???":
        raise UserError(
            f"model={name} needs local weights: set model.path=/path/to/hf-model-dir "
            "(a Hugging Face directory with config.json and weights)"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"model.path={p} does not exist: point it at a local Hugging Face model directory")
    if not p.is_dir():
        raise UserError(f"model.path={p} is not a directory: point it at a local Hugging Face model directory")
    if not (p / "config.json").is_file():
        raise UserError(f"model.path={p} has no config.json: is it a Hugging Face model directory?")
    try:
        config = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{p / 'config.json'} is not valid JSON: {err}") from err
    if "rope_theta" not in config and "rope_parameters" not in config and config.get("model_type") not in (
        "llama",
        "mistral",
        "qwen2",
    ):
        raise UserError(
            f"{p} holds a {config.get('model_type', 'unknown')!r} model without RoPE settings; clexlab extends RoPE models"
        )
    return p


def require_file(path: str | None, key: str, hint: str) -> Path:
    """A path that must exist, or a one-line error naming ``key``."""
    if not path:
        raise UserError(f"set {key}=... ({hint})")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{key}={p} does not exist or is not a file ({hint})")
    return p


def preflight_train(cfg: DictConfig) -> dict[str, Any]:
    """Validate a train config: typed nodes, model directory, resume checkpoint.

    Returns:
        The typed nodes from :func:`validate_config`.
    """
    typed = validate_config(cfg)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    dry = typed["dry_run"].dry_run
    path = model.get("path")
    weightless = dry and (path is None or str(path) == "???")  # a dry run builds on the meta device
    if not weightless and (path is not None or model.get("tokenizer") == "hf"):
        check_model_dir(path, model.get("name", "model"))
    check_model_node(model)
    if dry:
        return typed  # planning for other machines: resume files and this machine's GPUs do not matter
    if cfg.get("ckpt_path") and str(cfg.ckpt_path) != "auto":  # auto is resolved by the workflow
        from clexlab.utils.resume import resolve_ckpt_path

        resolve_ckpt_path(cfg)  # exists, readable, written by train.py for a model of this shape
    if cfg.get("init_from"):
        require_file(cfg.init_from, "init_from", "a clexlab .ckpt whose weights start this run")
    if "trainer" in cfg:
        check_devices(cfg.trainer)
    return typed


def check_model_node(model: dict[str, Any]) -> None:
    """``model.train_length``, ``model.dtype``, ``model.arch`` and ``model.vocab_size`` of a train config."""
    train_length = model.get("train_length")
    if not isinstance(train_length, int) or isinstance(train_length, bool) or train_length < 2:
        raise UserError(f"model.train_length must be an integer >= 2 (the training sequence length), got {train_length!r}")
    dtype = model.get("dtype") or "float32"
    if dtype not in DTYPE_NAMES:
        raise UserError(f"model.dtype must be one of {list(DTYPE_NAMES)}, got {dtype!r}")
    if not model.get("path"):  # a model built in code: its family must be supported (one line otherwise)
        from clexlab.arch import get_architecture

        get_architecture(model.get("arch") or "llama")
    vocab = model.get("vocab_size")
    if vocab is not None and (not isinstance(vocab, int) or isinstance(vocab, bool) or vocab < 1):
        raise UserError(f"model.vocab_size must be a positive integer or null (the tokenizer's), got {vocab!r}")


def check_devices(trainer: Any) -> None:
    """``trainer.devices`` must fit the machine: one line instead of Lightning's exception after startup.

    CPU "devices" are processes (any number works), so only GPU requests are counted.
    """
    import torch

    accelerator = str(trainer.get("accelerator", "auto")).lower()
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, bool) or isinstance(devices, float):
        raise UserError(f"trainer.devices must be a number, a list of device ids or auto, got {devices!r}")
    if isinstance(devices, int) and (devices == 0 or devices < -1):
        raise UserError(f"trainer.devices must be >= 1 (or -1 for all), got {devices}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and gpus == 0:
        raise UserError(f"trainer.accelerator={accelerator} but this machine has no usable GPU: use trainer.accelerator=cpu (or auto)")
    count = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else devices
    wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if wants_gpu and isinstance(count, int) and count > gpus:
        raise UserError(f"trainer.devices={count} but this machine has {gpus} GPU(s): lower trainer.devices (or -1 for all)")


CKPT_HINT = "a clexlab checkpoint, e.g. outputs/<date>/<time>/checkpoints/last.ckpt"


def preflight_eval(cfg: DictConfig) -> Any:
    """Validate an eval config: the ``eval`` node and what to evaluate.

    Exactly one of ``ckpt_path`` (a clexlab checkpoint) and ``model.path`` (a
    local Hugging Face directory, plain or in the released CLEX format) must be set.

    Returns:
        The typed ``eval`` node.
    """
    typed = validate_node("eval", cfg.eval)
    model = cfg.get("model") or {}
    model_path = model.get("path") if hasattr(model, "get") else None
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and model_path:
        raise UserError("set either ckpt_path=... (a clexlab checkpoint) or model.path=... (a Hugging Face directory), not both")
    if model_path:
        check_model_dir(str(model_path), "model")
        train_length = model.get("train_length")
        if train_length is not None and (not isinstance(train_length, int) or train_length <= 0):
            raise UserError(f"model.train_length must be a positive integer, got {train_length!r}")
        if model.get("tokenizer", "auto") not in ("auto", "hf", "bytes"):
            raise UserError(f"model.tokenizer must be auto, hf or bytes, got {model.get('tokenizer')!r}")
    elif not ckpt_path:
        raise UserError(f"set ckpt_path=... ({CKPT_HINT}) or model.path=... (a local Hugging Face model directory)")
    else:
        require_file(ckpt_path, "ckpt_path", CKPT_HINT)
    return typed
