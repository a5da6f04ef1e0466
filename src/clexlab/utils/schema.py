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
TASKS = ("ppl", "passkey", "ruler", "needle_nll", "longbench")


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


def _positive_lengths(key: str, lengths: list[int] | None) -> None:
    for n in lengths or []:
        if n <= 0:
            raise UserError(f"{key} must be positive integers, got {list(lengths)}")


@dataclass
class RulerEvalConfig:
    """``eval.ruler``: RULER's synthetic tasks (part of :class:`EvalConfig`)."""

    tasks: list[str] = field(
        default_factory=lambda: [
            "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
            "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe",
        ]
    )
    lengths: list[int] | None = None  # prompt lengths in tokens (answer budget included); null = the perplexity lengths
    samples: int = 5
    chat_template: bool = False  # wrap each prompt in the tokenizer's chat template (instruction models)
    tokens_to_generate: int | None = None  # answer budget of every task; null = RULER's per task (128, 30, 120, 50)

    def __post_init__(self) -> None:
        from clexlab.evaluation.ruler.harness import TASKS as RULER_TASKS

        unknown = [t for t in self.tasks if t not in RULER_TASKS]
        if not self.tasks or unknown:
            raise UserError(f"eval.ruler.tasks: unknown task(s) {unknown or '(none given)'}; choose from {list(RULER_TASKS)}")
        _positive_lengths("eval.ruler.lengths", self.lengths)
        if self.samples < 1:
            raise UserError(f"eval.ruler.samples must be >= 1, got {self.samples}")
        if self.tokens_to_generate is not None and self.tokens_to_generate < 1:
            raise UserError(f"eval.ruler.tokens_to_generate must be >= 1 or null (RULER's), got {self.tokens_to_generate}")


@dataclass
class NeedleEvalConfig:
    """``eval.needle_nll``: the teacher-forced needle score (part of :class:`EvalConfig`)."""

    lengths: list[int] | None = None  # null = the perplexity lengths
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    samples: int = 5

    def __post_init__(self) -> None:
        _positive_lengths("eval.needle_nll.lengths", self.lengths)
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise UserError(f"eval.needle_nll.depths must be fractions in [0, 1], got {list(self.depths)}")
        if self.samples < 1:
            raise UserError(f"eval.needle_nll.samples must be >= 1, got {self.samples}")


@dataclass
class LongBenchEvalConfig:
    """``eval.longbench``: LongBench from local jsonl files (part of :class:`EvalConfig`)."""

    dir: str | None = None  # a directory of <dataset>.jsonl files (THUDM/LongBench's data)
    datasets: list[str] | None = None  # null = every known dataset with a file in dir
    max_length: int | None = None  # prompt budget in tokens (middle truncation); null = the longest eval length
    samples: int | None = None  # first N records per dataset; null = all
    chat_template: bool = False  # the tokenizer's chat template, except on the datasets LongBench leaves plain

    def __post_init__(self) -> None:
        from clexlab.evaluation.longbench.config import DATASETS

        unknown = [d for d in self.datasets or [] if d not in DATASETS]
        if unknown:
            raise UserError(f"eval.longbench.datasets: unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
        if self.max_length is not None and self.max_length < 1:
            raise UserError(f"eval.longbench.max_length must be a positive number of tokens or null, got {self.max_length}")
        if self.samples is not None and self.samples < 1:
            raise UserError(f"eval.longbench.samples must be >= 1 or null (all), got {self.samples}")


@dataclass
class KVOptionsConfig:
    """``eval.kv``: budget options of ``eval.kv_policy`` (null: the policy's default; see clexlab.evaluation.kv_policies)."""

    n_sink: Any = None  # streaming: attention sinks (4)
    n_init: Any = None  # tokenselect: initial tokens always kept (128)
    n_global: Any = None  # lm_infinite: global tokens (10)
    n_local: Any = None  # recent tokens (streaming: L - n_sink; lm_infinite: L; tokenselect: 512)
    top_k: Any = None  # tokenselect: selected tokens (2048)
    max_distance: Any = None  # lm_infinite: distance ceiling (L)
    positions: Any = None  # streaming / tokenselect: compact (within the kept keys) | original
    similarity_threshold: Any = None  # tokenselect: Selection Cache threshold (0.9; > 1: never reuse)
    chunk_size: Any = None  # queries per prefill chunk (512)


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
    ruler: RulerEvalConfig = field(default_factory=RulerEvalConfig)
    needle_nll: NeedleEvalConfig = field(default_factory=NeedleEvalConfig)
    longbench: LongBenchEvalConfig = field(default_factory=LongBenchEvalConfig)
    kv_policy: str = "full"  # full | streaming | lm_infinite | tokenselect (training-free long context)
    kv: KVOptionsConfig = field(default_factory=KVOptionsConfig)

    def __post_init__(self) -> None:
        from dataclasses import asdict

        from clexlab.evaluation.kv_policies import check_policy

        check_policy(self.kv_policy, asdict(self.kv))
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
        if "longbench" in self.tasks and not self.longbench.dir:
            raise UserError(
                "eval.tasks has longbench but eval.longbench.dir is not set: put LongBench's <dataset>.jsonl files "
                "in a directory and pass eval.longbench.dir=/path/to/it"
            )


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
