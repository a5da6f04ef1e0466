"""Import the class a config's ``_target_`` names, with one-line errors (no Hydra needed)."""

from __future__ import annotations

import importlib
import inspect

from clexlab.utils.errors import UserError


def import_target(target: str, key: str, base: type) -> type:
    """The class at dotted path ``target``, which must subclass ``base``.

    Args:
        target: ``package.module.Class``.
        key: the config key that named it (for the message), e.g. ``rope._target_``.
        base: the class it must derive from.

    Raises:
        UserError: the path does not import, or names something else.
    """
    module_name, _, class_name = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise UserError(f"{key}={target} cannot be imported ({type(err).__name__}): fix the class path") from err
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise UserError(f"{key}={target} is not a {base.__name__}")
    return cls
