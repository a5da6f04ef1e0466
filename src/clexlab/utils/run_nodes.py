"""The nodes of a training run that name a class: model shape, trainer, data, callbacks, loggers, curriculum.

:func:`check_run_nodes` runs in :func:`clexlab.utils.checks.preflight_train`,
after the typed nodes of :mod:`clexlab.utils.schema`: together they give every
key of ``conf/train.yaml`` and its groups a type and a range before a model,
a corpus or a Trainer is built.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clexlab.utils.errors import UserError
from clexlab.utils.model_schema import ModelConfig, rotary_dim, validate_model
from clexlab.utils.options import check_target_options

# Arguments clexlab passes itself when it builds the node's class (a config must not set them).
PROVIDED = {"trainer": ("callbacks", "logger"), "data": ("tokenizer",)}


def resolved(cfg: DictConfig, key: str, *, allow_missing: bool = False) -> Any:
    """``cfg[key]`` as plain Python with interpolations resolved; a broken interpolation or ``???`` is one line.

    ``allow_missing``: keep ``???`` values (the ``model`` node, whose mandatory path gets its own message).
    """
    try:
        node = cfg[key]
        if not OmegaConf.is_config(node):
            return node
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=not allow_missing)
    except OmegaConfBaseException as err:
        raise UserError(f"{key}: {str(err).strip().splitlines()[0]}") from err


def check_run_nodes(cfg: DictConfig, typed: dict[str, Any]) -> ModelConfig:
    """Check the model, trainer, data, callbacks, logger and curriculum nodes of a train config.

    Args:
        cfg: the composed train config.
        typed: :func:`clexlab.utils.schema.validate_config`'s nodes (``rope``: the RoPE method).

    Returns:
        The typed ``model`` node.
    """
    model_node = resolved(cfg, "model", allow_missing=True)
    built_in_code = model_node.get("path") in (None, "???")
    model = validate_model(model_node, built_in_code=built_in_code)
    if model.train_length is None:
        raise UserError("model.train_length must be set: the training sequence length L (scale t = length / L)")
    for key, value in (resolved(cfg, "paths") or {}).items() if "paths" in cfg else ():
        if value is not None and not isinstance(value, str):
            raise UserError(f"paths.{key} must be a directory path (a string), got {value!r}")
    method = typed.get("rope")
    if built_in_code and method is not None:
        method.check_rotary_dim(rotary_dim(model))
    check_class_nodes(cfg, ("trainer", "data"), ("callbacks", "logger"))
    if method is not None:
        check_curriculum(cfg, typed, method)
    return model


def check_class_nodes(
    cfg: DictConfig, nodes: tuple[str, ...], groups: tuple[str, ...], filled: dict[str, tuple[str, ...]] | None = None
) -> None:
    """Check the options of the ``_target_`` nodes ``nodes`` and of every ``_target_`` node in ``groups``.

    ``filled``: per node, keys the workflow sets itself whatever the config says (eval.py's ``data``
    takes ``seq_len``, ``seed`` and ``cache_dir`` from the checkpoint and the run), left unchecked.
    """
    for key in nodes:
        if cfg.get(key) is not None:
            node = {k: v for k, v in resolved(cfg, key).items() if k not in (filled or {}).get(key, ())}
            check_target_options(node, key, provided=PROVIDED.get(key, ()))
    for group in groups:
        for name, node in (resolved(cfg, group) or {}).items() if group in cfg else ():
            if isinstance(node, dict) and "_target_" in node:
                check_target_options(node, f"{group}.{name}")


def check_curriculum(cfg: DictConfig, typed: dict[str, Any], method: Any) -> None:
    """Build the run's curriculum once (cheap, no tensors): its class checks its own options."""
    from clexlab.curriculum.build import curriculum_for_method

    train = typed.get("train")
    position_sampling = getattr(train, "position_sampling", None)
    if position_sampling is None:
        position_sampling = method.samples_positions
    node = resolved(cfg, "curriculum") if "curriculum" in cfg else None
    try:
        curriculum_for_method(
            node,
            method,
            seed=int(cfg.get("seed", 0)),
            position_sampling=bool(position_sampling),
            sampling_max_scale=getattr(train, "sampling_max_scale", None) or getattr(typed.get("clex"), "max_scale", None),
        )
    except (TypeError, ValueError) as err:
        raise UserError(f"curriculum: {str(err).splitlines()[0]}; see conf/curriculum/*.yaml for the options") from err
