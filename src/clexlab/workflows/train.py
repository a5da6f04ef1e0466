"""The training workflow behind ``python train.py``."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from clexlab.models import LongContextLM
from clexlab.models.init_from import load_weights_from
from clexlab.utils.checks import preflight_train
from clexlab.workflows.common import (
    container,
    evaluate_and_report,
    instantiate_callbacks,
    instantiate_loggers,
    log,
    tokenizer_for,
)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate the final weights at every length, write ``results.json``.

    Returns:
        The results payload (also written to ``<output_dir>/results.json``).
    """
    typed = preflight_train(cfg)
    model_cfg = container(cfg.model)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = cfg.paths.output_dir

    tokenizer = tokenizer_for(model_cfg)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, _recursive_=True)
    module = LongContextLM(
        model=model_cfg,
        rope=container(cfg.rope),
        clex=container(cfg.clex),
        optim=container(cfg.optim),
        vocab_size=tokenizer.vocab_size,
        seed=cfg.seed,
        train=container(cfg.get("train")),
        data=container(cfg.data),
    )
    if cfg.get("init_from"):
        load_weights_from(module, cfg.init_from)
    loggers = instantiate_loggers(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=instantiate_callbacks(cfg.get("callbacks")), logger=loggers or False)

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_seconds = time.perf_counter() - started
    if trainer.interrupted:
        log.warning("training was interrupted; evaluating the weights reached so far")

    payload: dict[str, Any] = {}
    if trainer.is_global_zero:
        payload = evaluate_and_report(
            module.model,
            datamodule,
            module.train_length,
            typed["eval"],
            output_dir,
            loggers,
            extra={
                "rope": cfg.rope.name,
                "method": cfg.get("label") or module.method,
                "rope_factor": cfg.rope.get("factor"),
                "position_sampling": module.position_sampling,
                "model": model_cfg.get("name"),
                "global_step": trainer.global_step,
                "train_seconds": round(train_seconds, 1),
                "seed": cfg.seed,
                "checkpoint": trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else None,
            },
        )
        print(f"trained {trainer.global_step} steps in {train_seconds / 60:.1f} min; run directory: {output_dir}")
    for logger in loggers:
        logger.finalize("success")
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()  # the next job of a multirun must start its own W&B run
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return payload
