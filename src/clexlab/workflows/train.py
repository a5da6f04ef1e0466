"""The training workflow behind ``python train.py``."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import DictConfig, OmegaConf

from clexlab.callbacks import LastCheckpoint, LongContextEval
from clexlab.evaluation.perplexity import resolve_lengths, target_budget
from clexlab.models import LongContextLM, sharding
from clexlab.models.init_from import load_weights_from
from clexlab.utils.checks import preflight_train
from clexlab.utils.distributed import distributed_job
from clexlab.utils.errors import StopRequested, UserError
from clexlab.utils.resume import resolve_ckpt_path
from clexlab.workflows.common import build, container, instantiate_all, log, tokenizer_for
from clexlab.workflows.evaluate import Subject, run_suite


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate the final weights at every length, write ``results.json``.

    With several processes (``trainer=ddp`` / ``trainer=fsdp``), every rank
    runs this function; rank 0 evaluates and writes the results, the other
    ranks return an empty payload as soon as training is over.

    Returns:
        The results payload (also written to ``<output_dir>/results.json``).
    """
    typed = preflight_train(cfg)
    with distributed_job():  # the multirun fix for Lightning's rank launcher; a clean slate after the job
        return _train(cfg, typed)


def _train(cfg: DictConfig, typed: dict[str, Any]) -> dict[str, Any]:
    model_cfg = container(cfg.model)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = cfg.paths.output_dir
    _refuse_finished_run_dir(output_dir)
    ckpt_path = resolve_ckpt_path(cfg)  # a file, the one ckpt_path=auto finds, or None; checked against the model

    tokenizer = tokenizer_for(model_cfg)
    datamodule = build(cfg.data, "data", tokenizer=tokenizer, _recursive_=True)
    callbacks = instantiate_all(cfg.get("callbacks"))
    # Too little data for the windows or the evaluations: say so now, not after days of training.
    datamodule.check_fits(_eval_needs(typed["eval"], callbacks, int(model_cfg["train_length"])))
    module = LongContextLM(
        model=model_cfg,
        rope=container(cfg.rope),
        clex=container(cfg.clex),
        optim=container(cfg.optim),
        vocab_size=tokenizer.vocab_size,
        seed=cfg.seed,
        train=container(cfg.get("train")),
        data=container(cfg.data),
        curriculum=container(cfg.get("curriculum")),
        load_weights=ckpt_path is None,  # the checkpoint replaces the pretrained weights anyway
    )
    if cfg.get("init_from"):
        load_weights_from(module, cfg.init_from)
    loggers = instantiate_all(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    _check_strategy(trainer)

    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except RuntimeError as err:
        if ckpt_path and "state_dict" in str(err):
            raise UserError(f"ckpt_path={ckpt_path} does not fit this model: {str(err).splitlines()[0]}") from err
        raise
    train_seconds = time.perf_counter() - started
    last = next((cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
    if last is not None and last.stop_signal is not None:
        _stopped(last, trainer, loggers)
    if trainer.interrupted:
        log.warning("training was interrupted; evaluating the weights reached so far")

    # Under FSDP every rank holds a shard: gather the whole weights to rank 0 (all ranks take part).
    eval_model = _full_model_on_rank_zero(module, trainer) if sharding.is_sharded(module.model) else module.model
    if not trainer.is_global_zero:
        # The other ranks are done. They leave now rather than wait at a barrier
        # while rank 0 evaluates: a long evaluation would outlast the collective timeout.
        for logger in loggers:
            logger.finalize("success")
        return {}

    extra = {
        **module.rope_method.summary(),
        "method": cfg.get("label") or module.method,
        "position_sampling": module.position_sampling,
        "model": model_cfg.get("name"),
        "global_step": trainer.global_step,
        "train_seconds": round(train_seconds, 1),
        "seed": cfg.seed,
        "checkpoint": _last_checkpoint_path(trainer),
    }
    if trainer.world_size > 1:
        extra["world_size"] = trainer.world_size
    # The same evaluation, report and figures as eval.py, on the data already loaded.
    subject = Subject(eval_model, tokenizer, module.train_length, None, extra, list(getattr(tokenizer, "bos_prefix", [])))
    payload = run_suite(subject, typed["eval"], cfg, loggers, datamodule=datamodule)  # finalizes the loggers
    print(f"trained {trainer.global_step} steps in {train_seconds / 60:.1f} min; run directory: {output_dir}")
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()  # the next job of a multirun must start its own W&B run
    return payload


def _check_strategy(trainer: L.Trainer) -> None:
    """Refuse strategy settings clexlab's checkpoint tools cannot follow (one line, before training)."""
    strategy = trainer.strategy
    if isinstance(strategy, ModelParallelStrategy) and getattr(strategy, "_save_distributed_checkpoint", False):
        raise UserError(
            "trainer.strategy.save_distributed_checkpoint=true writes a sharded checkpoint directory, which "
            "ckpt_path=..., ckpt_path=auto and eval.py do not read: use trainer=fsdp as shipped (false: one .ckpt file)"
        )


def _full_model_on_rank_zero(module: LongContextLM, trainer: L.Trainer) -> torch.nn.Module | None:
    """An unsharded copy of the trained causal LM on rank 0 (None on the other ranks).

    Every rank takes part in gathering the shards; rank 0 then builds the
    model from the run's own hyper-parameters and takes the gathered tensors
    (``assign=True``: no second copy), on the training device.
    """
    state = sharding.full_state_dict(module.model)
    if not trainer.is_global_zero:
        return None
    hparams = dict(module.hparams)
    hparams.pop("load_weights", None)
    model = LongContextLM(**hparams, load_weights=False).model
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(module.device).eval()


def _last_checkpoint_path(trainer: L.Trainer) -> str | None:
    """The newest ``last.ckpt`` any checkpoint callback wrote (None without one)."""
    paths = [cb.last_model_path for cb in trainer.checkpoint_callbacks if getattr(cb, "last_model_path", "")]
    return paths[0] if paths else None


def _refuse_finished_run_dir(output_dir: str | Path) -> None:
    """Never train into a directory that already holds a run's results or checkpoints.

    Two runs started in the same second get the same ``outputs/<date>/<time>``;
    the second would overwrite the first one's checkpoints and results.
    """
    out = Path(output_dir)
    taken = [p.name for p in (out / "results.json", out / "checkpoints") if p.exists() and (p.is_file() or any(p.iterdir()))]
    if taken:
        raise UserError(
            f"{out} already holds a run ({', '.join(taken)}): start again (a new directory) or set hydra.run.dir=...; "
            f"to continue that run use ckpt_path={out / 'checkpoints' / 'last.ckpt'}"
        )


def _eval_needs(eval_cfg: Any, callbacks: list[L.Callback], train_length: int) -> dict[str, tuple[int, str]]:
    """Tokens each split must hold for the final evaluation and the evaluations during training."""
    needs: dict[str, tuple[int, str]] = {}

    def need(split: str, lengths: list[int], max_tokens: int, what: str) -> None:
        tokens = target_budget(lengths, max_tokens) + 1
        if tokens > needs.get(split, (0, ""))[0]:
            needs[split] = (tokens, what)

    lengths = resolve_lengths(train_length, eval_cfg.multiples, eval_cfg.lengths)
    need(eval_cfg.split, lengths, eval_cfg.max_tokens, f"eval (lengths {lengths}, eval.max_tokens={eval_cfg.max_tokens})")
    for cb in callbacks:
        if isinstance(cb, LongContextEval):
            lengths = resolve_lengths(train_length, cb.multiples, cb.lengths)
            need(cb.split, lengths, cb.max_tokens, f"callbacks.long_context_eval (lengths {lengths}, max_tokens={cb.max_tokens})")
    return needs


def _stopped(last: LastCheckpoint, trainer: L.Trainer, loggers: list) -> None:
    """After a Ctrl-C / SIGTERM stop: close the loggers and leave with the resume command."""
    for logger in loggers:
        logger.finalize("aborted")
    name = signal.Signals(last.stop_signal).name
    raise StopRequested(
        f"stopped by {name} after step {trainer.global_step}; checkpoint saved: {last.last_model_path}; "
        f"resume with: python train.py <same overrides> ckpt_path={last.last_model_path}",
        last.stop_signal,
    )
