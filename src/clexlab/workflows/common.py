"""Pieces shared by the train and eval workflows."""

from __future__ import annotations

import logging
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clexlab.data.tokenizer import Tokenizer, load_tokenizer
from clexlab.utils.errors import UserError, describe, find_user_error

log = logging.getLogger("clexlab")


def tokenizer_for(model_cfg: dict[str, Any]) -> Tokenizer:
    """The tokenizer named by the model node (bytes, or the one in ``model.path``)."""
    return load_tokenizer(model_cfg.get("tokenizer", "bytes"), model_cfg.get("path"))


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``; a value its class refuses is one line naming ``key``.

    Lightning's Trainer and clexlab's callbacks refuse a value of the wrong kind
    (``trainer.max_steps=abc``) with a TypeError or ValueError, which Hydra wraps
    in an InstantiationException and prints as a traceback. Errors that already
    say what to do (a :class:`UserError` inside, Lightning's MisconfigurationException)
    pass through unchanged.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if find_user_error(err) is None and isinstance(cause, (TypeError, ValueError)):
            raise UserError(f"{key}: {describe(cause)}; check the {key}.* values (their types and ranges)") from err
        raise


def instantiate_all(cfg: DictConfig | None, group: str | None = None) -> list[Any]:
    """Every ``_target_`` node directly under ``cfg`` (the ``logger`` or ``callbacks`` group), none when empty.

    ``group``: the group's name, for the message when a node's class refuses its options.
    """
    if not cfg:
        return []
    group = group or cfg._key() or "config"
    return [build(node, f"{group}.{name}") for name, node in cfg.items() if isinstance(node, DictConfig) and "_target_" in node]


def container(node: Any) -> Any:
    """A resolved plain-Python copy of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
