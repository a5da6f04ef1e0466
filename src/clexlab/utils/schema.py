"""Typed schemas for the config nodes users edit most, and their validation.

Hydra composes plain YAML; :func:`validate_config` then merges each node onto
its dataclass schema (catching wrong types) and builds the object (whose
``__post_init__`` checks values), so every mistake becomes one line naming
the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clexlab.rope.dynamics import ACTIVATIONS
from clexlab.rope.solver import SOLVERS
from clexlab.utils.errors import UserError


@dataclass
class ClexConfig:
    """The top-level ``clex`` node: the CLEX ODE and its curriculum."""

    max_scale: int = 8
    param_factor: int = 1
    act: str = "tanh"
    time_dt: float = 0.01
    lr: float = 1e-5
    log_scale: bool = False
    solver: str = "fast"
    freeze: bool = False

    def __post_init__(self) -> None:
        if self.max_scale < 1:
            raise UserError(f"clex.max_scale must be an integer >= 1, got {self.max_scale}")
        if self.param_factor < 1:
            raise UserError(f"clex.param_factor must be an integer >= 1, got {self.param_factor}")
        if self.act not in ACTIVATIONS:
            raise UserError(f"clex.act must be one of {sorted(ACTIVATIONS)}, got {self.act!r}")
        if not self.time_dt > 0:
            raise UserError(f"clex.time_dt must be > 0, got {self.time_dt}")
        if not self.lr >= 0:
            raise UserError(f"clex.lr must be >= 0, got {self.lr}")
        if self.solver not in SOLVERS:
            raise UserError(f"clex.solver must be one of {list(SOLVERS)}, got {self.solver!r}")


@dataclass
class TrainConfig:
    """The ``train`` node: position sampling for any method, and what a NaN/Inf step does."""

    position_sampling: bool | None = None
    sampling_max_scale: int | None = None
    skip_nonfinite: bool = False  # True: skip NaN/Inf steps (counted) instead of stopping the run

    def __post_init__(self) -> None:
        if self.sampling_max_scale is not None and self.sampling_max_scale < 1:
            raise UserError(f"train.sampling_max_scale must be >= 1, got {self.sampling_max_scale}")


@dataclass
class OptimConfig:
    """The ``optim`` node: AdamW with warmup and cosine decay."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise UserError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise UserError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


PROTOCOLS = ("chunks", "sliding")
TASKS = ("ppl", "passkey")


@dataclass
class PasskeyEvalConfig:
    """``eval.passkey``: the passkey-retrieval grid (part of :class:`EvalConfig`)."""

    lengths: list[int] | None = None  # prompt lengths in tokens; null = the perplexity lengths
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    samples: int = 5
    max_new_tokens: int = 10

    def __post_init__(self) -> None:
        for n in self.lengths or []:
            if n <= 0:
                raise UserError(f"eval.passkey.lengths must be positive integers, got {list(self.lengths)}")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise UserError(f"eval.passkey.depths must be fractions in [0, 1], got {list(self.depths)}")
        if self.samples < 1:
            raise UserError(f"eval.passkey.samples must be >= 1, got {self.samples}")
        if self.max_new_tokens < 5:
            raise UserError(f"eval.passkey.max_new_tokens must be >= 5 (a key has 5 digits), got {self.max_new_tokens}")


@dataclass
class EvalConfig:
    """The ``eval`` node: lengths, budget, protocol and tasks of the long-context evaluation."""

    multiples: list[float] = field(default_factory=lambda: [1, 2, 4, 8])
    lengths: list[int] | None = None
    max_tokens: int = 16384
    batch_size: int = 4
    split: str = "test"
    protocol: str = "chunks"
    stride: int = 256
    tasks: list[str] = field(default_factory=lambda: ["ppl"])
    passkey: PasskeyEvalConfig = field(default_factory=PasskeyEvalConfig)

    def __post_init__(self) -> None:
        for n in self.lengths or []:
            if n <= 0:
                raise UserError(f"eval.lengths must be positive integers, got {list(self.lengths)}")
        for m in self.multiples:
            if m <= 0:
                raise UserError(f"eval.multiples must be positive, got {list(self.multiples)}")
        if self.max_tokens <= 0:
            raise UserError(f"eval.max_tokens must be > 0, got {self.max_tokens}")
        if self.batch_size <= 0:
            raise UserError(f"eval.batch_size must be > 0, got {self.batch_size}")
        if self.split not in ("train", "val", "test"):
            raise UserError(f"eval.split must be train, val or test, got {self.split!r}")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"eval.protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.stride <= 0:
            raise UserError(f"eval.stride must be a positive number of tokens, got {self.stride}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if not self.tasks or unknown:
            raise UserError(f"eval.tasks must be a non-empty subset of {list(TASKS)}, got {list(self.tasks)}")


@dataclass
class DryRunConfig:
    """The top-level ``dry_run`` / ``dry_run_gpu_gb`` keys: plan a run's memory instead of training it."""

    dry_run: bool = False
    dry_run_gpu_gb: float = 80.0  # GPU memory the plan is checked against, GiB

    def __post_init__(self) -> None:
        if not self.dry_run_gpu_gb > 0:
            raise UserError(f"dry_run_gpu_gb must be a positive number of GiB per GPU, got {self.dry_run_gpu_gb:g}")


SCHEMAS: dict[str, type] = {
    "clex": ClexConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "eval": EvalConfig,
}


def _one_line(err: OmegaConfBaseException, key: str) -> str:
    message = str(err).strip().splitlines()[0]
    return f"{key}: {message}"


def validate_node(name: str, node: Any) -> Any:
    """Check one config node against its schema; return the typed dataclass."""
    schema = SCHEMAS[name]
    try:
        # Resolve first: interpolations point at the root (e.g. ${clex.max_scale}), lost once merged alone.
        plain = OmegaConf.to_container(node, resolve=True, throw_on_missing=True) if OmegaConf.is_config(node) else node
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        full_key = str(getattr(err, "full_key", None) or "")
        key = full_key if full_key.startswith(f"{name}.") else f"{name}.{full_key}" if full_key else name
        raise UserError(_one_line(err, key)) from err


def validate_dry_run(cfg: DictConfig) -> DryRunConfig:
    """Check the top-level ``dry_run`` and ``dry_run_gpu_gb`` keys (absent: their defaults)."""
    keys = {k: cfg[k] for k in ("dry_run", "dry_run_gpu_gb") if k in cfg}
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DryRunConfig), keys))
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err, str(getattr(err, "full_key", None) or "dry_run"))) from err


def validate_rope(cfg: DictConfig) -> Any:
    """Build the RoPE method the ``rope`` node names (its class checks its own options); one line on error."""
    from clexlab.rope.methods import method_from_config

    try:
        rope = OmegaConf.to_container(cfg.rope, resolve=True, throw_on_missing=True) if OmegaConf.is_config(cfg.rope) else cfg.rope
        clex = OmegaConf.to_container(cfg.clex, resolve=True, throw_on_missing=True) if "clex" in cfg else {}
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err, "rope")) from err
    return method_from_config(rope, {"clex": clex})


def validate_config(cfg: DictConfig) -> dict[str, Any]:
    """Validate every schema'd node present in ``cfg``; return ``{name: dataclass}`` (plus ``dry_run``, ``rope``)."""
    typed = {name: validate_node(name, cfg[name]) for name in SCHEMAS if name in cfg}
    typed["dry_run"] = validate_dry_run(cfg)
    if "rope" in cfg:
        typed["rope"] = validate_rope(cfg)
    return typed
