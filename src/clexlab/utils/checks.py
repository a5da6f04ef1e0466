"""Checks that run before any model, corpus or Trainer is built, so bad input fails in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clexlab.utils.errors import UserError, describe
from clexlab.utils.json_files import read_json_object
from clexlab.utils.schema import validate_config, validate_node

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
    config = read_json_object(p / "config.json", "it must be the model's JSON config")
    if "rope_theta" not in config and "rope_parameters" not in config and config.get("model_type") not in (
        "llama",
        "mistral",
        "qwen2",
    ):
        raise UserError(
            f"{p} holds a {config.get('model_type', 'unknown')!r} model without RoPE settings; clexlab extends RoPE models"
        )
    scaling = config.get("rope_scaling")
    if not (isinstance(scaling, dict) and (scaling.get("type") or scaling.get("rope_type")) == "clex"):
        # transformers' own validators (shapes, rope parameters), before the tokenizer or any weight is read.
        # A released CLEX config is checked by its own loader (clexlab.models.official_clex), which strips
        # the keys transformers does not know.
        from clexlab.models.builder import load_hf_config

        load_hf_config(p)
    check_weight_headers(p)
    return p


def check_weight_headers(directory: Path) -> None:
    """Read the header of every ``*.safetensors`` file in ``directory`` (no tensor is read).

    safetensors refuses a file whose header is damaged or whose size does not
    match it (a truncated download or copy), so a bad shard of a 7B model is
    one line in seconds, not a traceback after minutes of loading.
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return
    from safetensors import SafetensorError, safe_open

    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as f:
                f.keys()
        except (SafetensorError, OSError) as err:
            raise UserError(
                f"{file} is damaged or truncated ({describe(err)}): copy or download the model's weights again"
            ) from err


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
    from clexlab.utils.budget import check_cpu_memory, check_setup_cost
    from clexlab.utils.run_nodes import check_run_nodes

    check_top_level(cfg)
    typed = validate_config(cfg)
    check_run_nodes(cfg, typed)
    if "rope" in typed:
        check_setup_cost(typed["rope"])
    model = OmegaConf.to_container(cfg.model, resolve=True)
    dry = typed["dry_run"].dry_run
    path = model.get("path")
    weightless = dry and (path is None or str(path) == "???")  # a dry run builds on the meta device
    if not weightless and (path is not None or model.get("tokenizer") == "hf"):
        check_model_dir(path, model.get("name", "model"))
    if dry:
        return typed  # planning for other machines: resume files and this machine's GPUs do not matter
    if cfg.get("ckpt_path") and str(cfg.ckpt_path) != "auto":  # auto is resolved by the workflow
        from clexlab.utils.resume import resolve_ckpt_path

        resolve_ckpt_path(cfg)  # exists, readable, written by train.py for a model of this shape
    if cfg.get("init_from"):
        check_init_from(cfg.init_from)
    if "trainer" in cfg:
        cpu_processes = check_devices(cfg.trainer)
        if cpu_processes:
            check_cpu_memory(cfg, cpu_processes)
    return typed


# Top-level keys of conf/train.yaml and conf/eval.yaml that hold a config node (a mapping; None where optional).
NODES = ("model", "data", "trainer", "rope", "clex", "train", "optim", "eval", "paths")
OPTIONAL_NODES = ("callbacks", "logger", "curriculum")
PATH_KEYS = ("ckpt_path", "init_from")


def check_top_level(cfg: DictConfig) -> None:
    """The top-level keys have the right kind of value: ``seed`` an integer, paths strings, nodes mappings.

    ``seed=abc`` or ``clex=5`` would otherwise fail deep inside Lightning or
    OmegaConf with a traceback; only the keys present in ``cfg`` are checked.
    """
    seed = cfg.get("seed")
    if "seed" in cfg and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise UserError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    for key in PATH_KEYS:
        value = cfg.get(key)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{key} must be a path (quote a numeric one: {key}='{value}') or null, got {value!r}")
    label = cfg.get("label")
    if label is not None and not isinstance(label, (str, int, float)):
        raise UserError(f"label must be a string or null, got {label!r}")
    for key in (*NODES, *OPTIONAL_NODES):
        if key not in cfg or (key in OPTIONAL_NODES and cfg.get(key) is None):
            continue
        if not OmegaConf.is_dict(cfg[key]):
            raise UserError(f"{key} is a config node, got {cfg[key]!r}: set its keys instead, e.g. {key}.<name>=<value>")


def check_init_from(path: str) -> None:
    """``init_from`` names a readable checkpoint that holds weights (read memory-mapped: cheap for a big file)."""
    from clexlab.utils.checkpoint_io import load_checkpoint_file

    require_file(path, "init_from", "a clexlab .ckpt whose weights start this run")
    ckpt = load_checkpoint_file(path, key="init_from", mmap=True)
    if not isinstance(ckpt.get("state_dict", ckpt), dict):
        raise UserError(f"init_from={path} holds no state_dict of weights: pick a checkpoint written by train.py")


def check_devices(trainer: Any) -> int:
    """``trainer.devices`` must fit the machine: one line instead of Lightning's exception after startup.

    CPU "devices" are processes (any number works), so only GPU requests are counted.

    Returns:
        The number of training processes on this machine's CPU (0: the run trains on GPUs).
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
    if wants_gpu:
        return 0
    return count if isinstance(count, int) and count > 0 else 1


CKPT_HINT = "a clexlab checkpoint, e.g. outputs/<date>/<time>/checkpoints/last.ckpt"


def preflight_eval(cfg: DictConfig) -> Any:
    """Validate an eval config: the ``eval`` node and what to evaluate.

    Exactly one of ``ckpt_path`` (a clexlab checkpoint) and ``model.path`` (a
    local Hugging Face directory, plain or in the released CLEX format) must be set.

    Returns:
        The typed ``eval`` node.
    """
    from clexlab.utils.model_schema import validate_model
    from clexlab.utils.run_nodes import check_class_nodes, resolved

    check_top_level(cfg)
    typed = validate_node("eval", cfg.eval)
    model_path = None
    if cfg.get("model") is not None:  # eval.py's model node: a local directory, its tokenizer, dtype, L
        model_path = validate_model(resolved(cfg, "model", allow_missing=True), built_in_code=False).path
    check_class_nodes(cfg, ("data",), ("logger",), filled={"data": ("seq_len", "seed", "cache_dir")})
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and model_path:
        raise UserError("set either ckpt_path=... (a clexlab checkpoint) or model.path=... (a Hugging Face directory), not both")
    if model_path:
        check_model_dir(str(model_path), "model")
    elif not ckpt_path:
        raise UserError(f"set ckpt_path=... ({CKPT_HINT}) or model.path=... (a local Hugging Face model directory)")
    else:
        require_file(ckpt_path, "ckpt_path", CKPT_HINT)
    return typed
