"""Model families: one :class:`~clexlab.arch.base.Architecture` per ``config.model_type``.

Every module of this package defines one family; the registry imports them
all, so adding a family is adding one file (see ``base.py``). Lookups go
through :func:`architecture_of`, which refuses an unknown family in one line
naming it and the supported ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from clexlab.arch.base import Architecture
from clexlab.utils.errors import UserError

_REGISTRY: dict[str, Architecture] = {}


def _load() -> dict[str, Architecture]:
    if not _REGISTRY:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base":
                importlib.import_module(f"{__name__}.{info.name}")
        for cls in _subclasses(Architecture):
            if cls.model_type:
                _REGISTRY[cls.model_type] = cls()
    return _REGISTRY


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def supported() -> list[str]:
    """The ``model_type`` of every supported family, sorted."""
    return sorted(_load())


def get_architecture(model_type: str) -> Architecture:
    """The adapter of ``model_type``, or a one-line :class:`UserError` listing the supported families."""
    arch = _load().get(str(model_type))
    if arch is None:
        raise UserError(
            f"model_type {model_type!r} is not supported by clexlab; supported: {', '.join(supported())} "
            "(a new family is one file in src/clexlab/arch/)"
        )
    return arch


def architecture_of(model_or_config: Any) -> Architecture:
    """The adapter of a transformers model or config (read from ``config.model_type``)."""
    config = getattr(model_or_config, "config", model_or_config)
    return get_architecture(getattr(config, "model_type", None))


__all__ = ["Architecture", "architecture_of", "get_architecture", "supported"]
