"""The evaluation workflow behind ``python eval.py``."""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clexlab.models import LongContextLM
from clexlab.utils.errors import UserError
from clexlab.utils.checks import preflight_eval
from clexlab.workflows.common import evaluate_and_report, instantiate_loggers, tokenizer_for


def load_checkpoint(path: str) -> tuple[LongContextLM, dict[str, Any]]:
    """Rebuild the module from a clexlab checkpoint (weights only; no pickled code runs)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise UserError(f"ckpt_path={path} is not a readable checkpoint ({type(err).__name__}: {err})".splitlines()[0]) from err
    hparams = ckpt.get("hyper_parameters")
    if not hparams or "model" not in hparams:
        raise UserError(f"ckpt_path={path} was not written by clexlab train.py (no model hyper-parameters)")
    module = LongContextLM(**hparams, load_weights=False)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise UserError(f"ckpt_path={path} does not match the model it describes: {str(err).splitlines()[0]}") from err
    return module, ckpt


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint at the configured lengths; write ``results.json`` to the run directory."""
    eval_cfg = preflight_eval(cfg)
    path = cfg.ckpt_path
    module, ckpt = load_checkpoint(str(path))
    hparams = ckpt["hyper_parameters"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device)
    if cfg.get("data"):
        # Another corpus: its own settings, with the checkpoint's train length.
        data_cfg = OmegaConf.to_container(cfg.data, resolve=False)
        data_cfg.update(seq_len=module.train_length, seed=cfg.seed)
    else:
        data_cfg = hparams.get("data")
    if not data_cfg:
        raise UserError("the checkpoint does not record its data; pass data=stdlib or data=text ...")
    data_cfg = OmegaConf.create(data_cfg)
    data_cfg.cache_dir = cfg.paths.cache_dir
    datamodule = instantiate(data_cfg, tokenizer=tokenizer_for(hparams["model"]), _recursive_=True)
    return evaluate_and_report(
        module.model,
        datamodule,
        module.train_length,
        eval_cfg,
        cfg.paths.output_dir,
        instantiate_loggers(cfg.get("logger")),
        extra={
            "rope": hparams["rope"],
            "model": hparams["model"].get("name"),
            "checkpoint": str(path),
            "global_step": int(ckpt.get("global_step", 0)),
        },
    )
