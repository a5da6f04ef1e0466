"""``python train.py ... dry_run=true``: plan the per-GPU memory of a run instead of training it.

The model is built on the meta device (no weights read, no memory used, so
``model.path`` may be unset), the RoPE method is installed as training would,
and :func:`clexlab.models.memory_plan.plan_memory` turns the shapes and the
trainer settings (precision, strategy, devices, micro-batch, checkpointing,
attention) into per-GPU bytes, printed with a verdict against ``dry_run_gpu_gb``.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from clexlab.models.memory_plan import (
    GIB,
    PRECISIONS,
    MemoryPlan,
    ModelShape,
    StepSetup,
    count_parameters,
    dtype_name,
    plan_memory,
)
from clexlab.utils.errors import UserError
from clexlab.workflows.common import container

# Strategies whose weights, gradients and optimizer state are split over the GPUs.
SHARDED_TARGETS = ("ModelParallelStrategy", "FSDPStrategy")
TIGHT = 0.10  # below this fraction of free memory, allocator fragmentation and the CUDA context may not fit


def sharding(trainer: dict[str, Any]) -> tuple[int, int, bool, str]:
    """``(world size, shards, sharded?, strategy name)`` of a ``trainer`` node.

    The strategy is a ``_target_`` node (``conf/trainer/fsdp.yaml``:
    ``ModelParallelStrategy``; ``ddp.yaml``: ``DDPStrategy``) or a Lightning
    string (``"fsdp"``, ``"ddp"``, ``"auto"``).
    """
    strategy = trainer.get("strategy") or "auto"
    if isinstance(strategy, dict):
        name = str(strategy.get("_target_", "auto")).rsplit(".", 1)[-1]
        sharded = name in SHARDED_TARGETS
    else:
        name = str(strategy)
        sharded = name.lower().startswith("fsdp")
    devices = trainer.get("devices", 1)
    if isinstance(devices, list):
        devices = len(devices)
    elif isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise UserError(f"dry_run needs trainer.devices as a number of GPUs, got {devices!r}: set trainer.devices=8 (say)")
    nodes = trainer.get("num_nodes", 1) or 1
    if not isinstance(nodes, int) or nodes < 1:
        raise UserError(f"trainer.num_nodes must be an integer >= 1, got {nodes!r}")
    world = devices * nodes
    return world, (world if sharded else 1), sharded, name


def _precision(trainer: dict[str, Any]) -> str:
    precision = str(trainer.get("precision", "32-true"))
    if precision not in PRECISIONS:
        raise UserError(f"dry_run plans trainer.precision in {list(PRECISIONS)}, got {precision!r}")
    return precision


def build_plan(cfg: DictConfig) -> tuple[MemoryPlan, dict[str, Any]]:
    """The memory plan of the run ``cfg`` describes, and facts for the report."""
    from clexlab.models.builder import build_skeleton
    from clexlab.rope.methods import method_from_config

    model_cfg = container(cfg.model)
    method = method_from_config(container(cfg.rope), {"clex": container(cfg.clex)})
    trainer = container(cfg.trainer)
    tokenizer_vocab = 257 if model_cfg.get("tokenizer", "bytes") == "bytes" else None  # the byte tokenizer's
    model = build_skeleton(model_cfg, tokenizer_vocab)
    method.install(model, int(model_cfg["train_length"]))  # counts the ODE as training would
    world, shards, sharded, strategy = sharding(trainer)
    if strategy == "ModelParallelStrategy" and str(trainer.get("precision")).startswith("16-"):
        # Lightning's ModelParallelStrategy accepts 32-true, bf16-mixed, bf16-true and 16-true only.
        raise UserError(
            f"trainer=fsdp does not run with trainer.precision={trainer.get('precision')} "
            "(Lightning's ModelParallelStrategy refuses it): use bf16-mixed"
        )
    trainable_rope = bool(method.trainable_parameters(model))
    setup = StepSetup(
        seq_len=int(model_cfg["train_length"]),
        batch=int(cfg.data.batch_size),
        precision=_precision(trainer),
        shards=shards,
        gradient_checkpointing=bool(model_cfg.get("gradient_checkpointing")),
        attn_implementation=str(model_cfg.get("attn_implementation", "sdpa")),
        trainable_rope=trainable_rope,
        fsdp=sharded,
    )
    shape = ModelShape.from_config(model.config)
    facts = {
        "experts": (shape.experts, shape.experts_per_token),
        "model": model_cfg.get("name", "model"),
        "rope": method.describe(),
        "world": world,
        "nodes": trainer.get("num_nodes", 1) or 1,
        "sharded": sharded,
        "strategy": strategy,
        "accumulate": trainer.get("accumulate_grad_batches", 1),
    }
    return plan_memory(shape, count_parameters(model), setup), facts


def _gib(n: int) -> str:
    return f"{n / GIB:8.2f}"


def verdict(total: int, gpu_gib: float) -> str:
    """One line: fits or not in ``gpu_gib`` GiB, with the headroom (or the shortfall)."""
    budget = gpu_gib * GIB
    free = budget - total
    if free < 0:
        return f"verdict: does NOT fit in {gpu_gib:g} GiB per GPU: needs {total / GIB:.2f} GiB, {-free / GIB:.2f} GiB over"
    tight = " (tight: keep ~10% for the CUDA context and fragmentation)" if free < TIGHT * budget else ""
    return f"verdict: fits in {gpu_gib:g} GiB per GPU with {free / GIB:.2f} GiB headroom ({100 * free / budget:.0f}%){tight}"


def format_plan(plan: MemoryPlan, facts: dict[str, Any], gpu_gib: float) -> str:
    """The dry run's report, one figure per line."""
    counts, setup = plan.counts, plan.setup
    rope = facts["rope"]
    experts, per_token = facts.get("experts", (1, 1))
    if facts["sharded"]:
        layout = f"{facts['strategy']}: weights, gradients and optimizer state sharded over {setup.shards} GPUs"
        if experts > 1:
            layout += " (every expert too: each rank holds 1/{} of each)".format(setup.shards)
    else:
        layout = f"{facts['strategy']}: every one of {facts['world']} GPU(s) holds a full replica"
    lines = [
        f"Dry run: model={facts['model']} rope={rope}, built on the meta device (no weights read, nothing trained)",
        f"parameters: {counts.total:,} total = {counts.total - counts.ode:,} model + {counts.ode:,} CLEX ODE"
        f" ({counts.trainable:,} trainable)",
        *(
            [f"mixture of experts: {counts.active:,} active per token ({per_token} of {experts} experts per layer)"]
            if experts > 1 else []
        ),
        f"step: {setup.seq_len} tokens x micro-batch {setup.batch} per GPU (x{facts['accumulate']} accumulation),"
        f" precision {setup.precision}, attention {setup.attn_implementation},"
        f" gradient checkpointing {'on' if setup.gradient_checkpointing else 'off'}",
        f"layout: {layout}",
    ]
    if setup.gathered_in_compute_dtype:
        low = dtype_name(2, setup.precision)
        lines.append(
            f"mixed precision: FSDP2 gathers {low} weights over the fp32 shards and reduces gradients in fp32"
            " (no autocast weight copies)"
        )
    lines += [
        "",
        "per-GPU memory                                                        GiB",
    ]
    for item in plan.items:
        lines.append(f"  {item.label:<66}{_gib(item.bytes)}")
        if item.key == "optimizer":
            lines.append(f"    {'of which the CLEX ODE group':<64}{_gib(plan.ode_optimizer)}  ({plan.ode_optimizer:,} bytes)")
    lines.append(f"  {'total (peak)':<66}{_gib(plan.total)}")
    overlap = sum(item.bytes for item in plan.items) - plan.total
    if overlap:
        lines.append(f"    (the weight copies and the backward transient never coexist: {overlap / GIB:.2f} GiB counted once)")
    lines += ["", verdict(plan.total, gpu_gib)]
    return "\n".join(lines)


def dry_run(cfg: DictConfig) -> MemoryPlan:
    """Print the memory plan of ``cfg``'s training run and return it (trains nothing)."""
    plan, facts = build_plan(cfg)
    print(format_plan(plan, facts, float(cfg.get("dry_run_gpu_gb", 80))))
    return plan
