"""The paper's protocol in miniature: one base model, every method continued from it.

Stage 1 trains a base model at L with plain RoPE. Stage 2 starts every method
from the base weights (``init_from``) and trains it for the same number of
steps at the same length L, on the same data; ``steps: 0`` evaluates the base
with the method applied at inference only (e.g. NTK on the plain model). All
runs are scored at the same multiples of L on the same target tokens, and the
summary (table and plot) is written beside them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from clexlab.rope.methods import method_from_config
from clexlab.summarize import find_results, write_summary
from clexlab.utils.errors import UserError
from clexlab.workflows.train import train


def _stage(
    cfg: DictConfig, out: Path, steps: int, rope: dict, clex: dict | None = None, init_from: str | None = None
) -> dict:
    stage = copy.deepcopy(cfg)
    with open_dict(stage):
        del stage["protocol"]
        stage.label = out.name
        stage.rope = OmegaConf.create(rope)
        if clex:
            stage.clex = OmegaConf.merge(stage.clex, clex)
        stage.trainer.max_steps = int(steps)
        stage.paths.output_dir = str(out)
        stage.init_from = init_from
        if stage.get("logger") and stage.logger.get("wandb"):
            stage.logger.wandb.group = str(out.parent)
            stage.logger.wandb.name = f"{cfg.task_name}-{out.name}"
    return train(stage)


def run_extrapolation(cfg: DictConfig) -> dict[str, Any]:
    """Run both stages into ``paths.output_dir`` and summarize them there.

    One process only: the stages are several ``trainer.fit`` calls in one
    process, which Lightning's per-rank launcher (``trainer=ddp``/``fsdp``)
    would re-run whole from every rank. The protocol is a CPU-sized miniature;
    at scale, run the stages as separate ``train.py`` runs (``init_from=``).
    """
    _require_one_process(cfg.trainer)
    protocol = cfg.protocol
    root = Path(cfg.paths.output_dir)
    base = _stage(cfg, root / "base", protocol.base_steps, {"name": "none", "factor": 1.0})
    if not base.get("checkpoint"):
        raise UserError("stage 1 wrote no checkpoint: keep callbacks.last_checkpoint in the config")
    base_ckpt = base["checkpoint"]
    for entry in protocol.methods:
        rope = OmegaConf.to_container(entry.rope, resolve=True)
        clex = OmegaConf.to_container(entry.clex, resolve=True) if entry.get("clex") else {}
        method = method_from_config(rope, {"clex": {**OmegaConf.to_container(cfg.clex, resolve=True), **clex}})
        sampling = cfg.train.position_sampling
        sampling = method.samples_positions if sampling is None else bool(sampling)
        label = method.label(sampling)
        steps = protocol.stage2_steps if entry.get("steps") is None else entry.steps
        if steps == 0:
            label = f"{label}@inference"
        _stage(cfg, root / label, steps, rope, clex, init_from=base_ckpt)
    files = write_summary(root, find_results([root]))
    print(files["md"].read_text())
    print(f"summary: {files['md']}, {files['json']}, {files['png']}")
    return {"summary": str(files["md"])}


def _require_one_process(trainer: DictConfig) -> None:
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    strategy = trainer.get("strategy")
    multi = (
        (isinstance(devices, int) and not isinstance(devices, bool) and devices not in (1,))
        or (OmegaConf.is_list(devices) and len(devices) > 1)
        or nodes != 1
        or strategy is not None
    )
    if multi:
        raise UserError(
            "experiment=extrapolation runs in one process (several fits in a row): drop trainer=ddp/fsdp and set "
            "trainer.devices=1 trainer.num_nodes=1, or run its stages as separate train.py runs with init_from=..."
        )
