"""The paper's protocol in miniature: one base model, every method continued from it.

Stage 1 trains a base model at L with plain RoPE. Stage 2 starts every method
from the base weights (``init_from``) and trains it for the same number of
steps at the same length L, on the same data; ``steps: 0`` evaluates the base
with the method applied at inference only (e.g. NTK on the plain model). A row
may also set its own final evaluation (``eval: {kv_policy: streaming, kv: ...}``):
the training-free KV policies on the plain base, on the same footing. All
runs are scored at the same multiples of L on the same target tokens, and the
summary (table and plot) is written beside them.

A row may also train under its own curriculum (``curriculum: {_target_: ...}``
replaces the run's node, options alone are merged into it; the label gains the
curriculum's tag, e.g. ``clex+pose2``; ``label:`` names a row outright), and ``protocol.seeds: [0, 1, 2]``
repeats every trained row per seed (``<label>/seed<k>/``, one summary row with
mean ± std). ``protocol.base_ckpt`` starts stage 2 from an earlier base
instead of training one, and ``protocol.resume=true`` keeps the rows of an
interrupted run (same ``hydra.run.dir``) that already wrote ``results.json``.
``protocol.warmup: {steps, overrides}`` adds a stage 0 before the base, trained
from scratch with its own settings merged over the run's (e.g. a shorter
length and other data); the base then starts from its weights.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from clexlab.curriculum import curriculum_for_method
from clexlab.rope.methods import method_from_config
from clexlab.summarize import find_results, write_summary
from clexlab.utils.errors import UserError
from clexlab.workflows.train import train

WARMUP = "warmup"  # the optional stage 0's directory under the run


def _stage(
    cfg: DictConfig, out: Path, steps: int, rope: dict, clex: dict | None = None, init_from: str | None = None,
    evaluation: dict | None = None, *, label: str | None = None, seed: int | None = None, curriculum: dict | None = None,
    overrides: dict | None = None,
) -> dict:
    stage = copy.deepcopy(cfg)
    with open_dict(stage):
        if overrides:  # e.g. the warm-up's own length, batch and data
            stage.merge_with(overrides)
        if seed is not None:
            stage.seed = int(seed)
        if curriculum:
            stage.curriculum = _curriculum_node(stage.get("curriculum"), curriculum)
        if evaluation:  # e.g. {kv_policy: streaming, kv: {...}}: this row's final evaluation
            stage.eval = OmegaConf.merge(stage.eval, evaluation)
        del stage["protocol"]
        stage.label = label or out.name
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
    base_ckpt, base_runs = _base(cfg, root)
    seeds = [int(s) for s in (protocol.get("seeds") or [cfg.seed])]
    labels = []  # each row's label, in the order of protocol.methods
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
        evaluation = OmegaConf.to_container(entry.eval, resolve=True) if entry.get("eval") else None
        if evaluation and evaluation.get("kv_policy", "full") != "full":
            label = f"{label}+{_policy_label(evaluation, int(cfg.model.train_length))}"
        curriculum = OmegaConf.to_container(entry.curriculum, resolve=True) if entry.get("curriculum") else None
        tag = curriculum_for_method(
            _curriculum_node(cfg.get("curriculum"), curriculum), method, seed=cfg.seed, position_sampling=sampling,
            sampling_max_scale=cfg.train.get("sampling_max_scale"),
        ).tag()
        label = f"{label}+{tag}" if tag else label
        label = str(entry.get("label") or label)  # a row's own name, e.g. to tell clex.lr variants apart
        labels.append(label)
        runs = seeds if steps else seeds[:1]  # an untrained row is the same for every seed
        for seed in runs:
            out = root / label / f"seed{seed}" if len(runs) > 1 else root / label
            if protocol.get("resume") and out.is_dir():  # protocol.resume=true: finished rows are kept
                if (out / "results.json").is_file():
                    continue
                shutil.rmtree(out)  # a row the interruption cut short starts again
            _stage(cfg, out, steps, rope, clex, init_from=base_ckpt, evaluation=evaluation, label=label, seed=seed,
                   curriculum=curriculum)
    runs = [run for run in find_results([root, *base_runs]) if Path(run["run_dir"]) != root / WARMUP]  # not a method
    files = write_summary(root, runs, own_directory=True)  # root: this run's directory
    print(files["md"].read_text())
    print(f"summary: {files['md']}, {files['json']}, {files['png']}")
    return {"summary": str(files["md"]), "labels": labels}


def _base(cfg: DictConfig, root: Path) -> tuple[str, list[Path]]:
    """Stage 1: train the plain-RoPE base, or take ``protocol.base_ckpt``; its checkpoint and results outside ``root``."""
    given = cfg.protocol.get("base_ckpt")
    if given:
        ckpt = Path(str(given)).expanduser()
        if not ckpt.is_file():
            raise UserError(f"protocol.base_ckpt={ckpt} does not exist: point it at an earlier run's base/checkpoints/last.ckpt")
        results = ckpt.parent.parent / "results.json"  # the base run's own scores, for the summary's base row
        return str(ckpt), [results] if results.is_file() and root not in results.parents else []
    warmup, init_from = cfg.protocol.get("warmup"), None
    if warmup:  # stage 0: trained from scratch under its own overrides; the base starts from its weights
        steps = warmup.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserError(f"protocol.warmup.steps must be an integer >= 1, got {steps!r}")
        overrides = warmup.get("overrides")
        overrides = OmegaConf.to_container(overrides, resolve=False) if overrides else None
        first = _stage(cfg, root / WARMUP, steps, {"name": "none", "factor": 1.0}, overrides=overrides)
        if not first.get("checkpoint"):
            raise UserError("the warm-up stage wrote no checkpoint: keep callbacks.last_checkpoint in the config")
        init_from = first["checkpoint"]
    base = _stage(cfg, root / "base", cfg.protocol.base_steps, {"name": "none", "factor": 1.0}, init_from=init_from)
    if not base.get("checkpoint"):
        raise UserError("stage 1 wrote no checkpoint: keep callbacks.last_checkpoint in the config")
    return base["checkpoint"], []


def _curriculum_node(current: Any, entry: dict | None) -> dict | None:
    """A row's curriculum: its own node when it names a class (``_target_``), else its options over the run's."""
    current = OmegaConf.to_container(current, resolve=True) if OmegaConf.is_config(current) else current
    if not entry:
        return current
    if "_target_" in entry or current is None:
        return dict(entry)
    return {**current, **entry}


def _policy_label(evaluation: dict, train_length: int) -> str:
    """A directory-safe name of a row's KV policy and budget, e.g. ``streaming-4+124``."""
    from clexlab.evaluation.kv_policies import make_policy

    policy = make_policy(evaluation["kv_policy"], evaluation.get("kv") or {}, train_length)
    return policy.describe().replace("(", "-").replace(")", "").replace(",", "-")


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
