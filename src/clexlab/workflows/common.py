"""Pieces shared by the train and eval workflows."""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clexlab.data.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("clexlab")


def tokenizer_for(model_cfg: dict[str, Any]) -> Tokenizer:
    """The tokenizer named by the model node (bytes, or the one in ``model.path``)."""
    return load_tokenizer(model_cfg.get("tokenizer", "bytes"), model_cfg.get("path"))


def instantiate_all(cfg: DictConfig | None) -> list[Any]:
    """Every ``_target_`` node directly under ``cfg`` (the ``logger`` or ``callbacks`` group), none when empty."""
    if not cfg:
        return []
    return [instantiate(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def container(node: Any) -> Any:
    """A resolved plain-Python copy of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
