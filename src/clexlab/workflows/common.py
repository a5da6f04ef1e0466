"""Pieces shared by the train and eval workflows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clexlab.data.tokenizer import Tokenizer, load_tokenizer
from clexlab.evaluation import format_table, perplexity_at_lengths, resolve_lengths, results_payload, write_json

log = logging.getLogger("clexlab")


def tokenizer_for(model_cfg: dict[str, Any]) -> Tokenizer:
    """The tokenizer named by the model node (bytes, or the one in ``model.path``)."""
    return load_tokenizer(model_cfg.get("tokenizer", "bytes"), model_cfg.get("path"))


def instantiate_loggers(cfg: DictConfig | None) -> list[L.pytorch.loggers.Logger]:
    """Every ``_target_`` node under ``logger`` (none for ``logger=none``)."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def instantiate_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    """Every ``_target_`` node under ``callbacks``."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def container(node: Any) -> Any:
    """A resolved plain-Python copy of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def evaluate_and_report(
    model, datamodule, train_length: int, eval_cfg: Any, output_dir: str | Path, loggers=(), extra: dict | None = None
) -> dict[str, Any]:
    """Score the held-out split at every eval length; print the table; write ``results.json``.

    Returns:
        The ``results.json`` payload.
    """
    lengths = resolve_lengths(train_length, eval_cfg.multiples, eval_cfg.lengths)
    results = perplexity_at_lengths(
        model, datamodule.stream(eval_cfg.split), lengths, eval_cfg.max_tokens, eval_cfg.batch_size, progress=True
    )
    table = format_table(results, train_length)
    print(f"\nHeld-out perplexity ({eval_cfg.split} split, {results[lengths[0]].tokens} target tokens per length)")
    print(table)
    payload = results_payload(results, train_length, split=eval_cfg.split, **(extra or {}))
    path = write_json(Path(output_dir) / "results.json", payload)
    (Path(output_dir) / "results.md").write_text(table + "\n")
    print(f"results: {path}")
    for logger in loggers:
        logger.log_metrics({f"test/ppl@{n}": r.ppl for n, r in results.items()})
        if hasattr(logger, "log_table"):
            rows = [[n, n / train_length, r.ppl] for n, r in sorted(results.items())]
            logger.log_table("test/ppl_table", columns=["length", "multiple", "ppl"], data=rows)
    return payload
