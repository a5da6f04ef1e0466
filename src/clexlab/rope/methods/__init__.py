"""RoPE methods: one class per method, named by its config (``conf/rope/<name>.yaml``: ``_target_``).

:func:`method_from_config` builds the method a ``rope`` node describes. A node
without ``_target_`` (a checkpoint written before methods were classes, or a
compact entry of ``experiment=extrapolation``'s method list) is resolved by its
``name`` among the classes of this package, which are found by importing every
module in it: adding a method is one file here plus one config file.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from clexlab.rope.methods.base import FrequencyMethod, RopeMethod
from clexlab.utils.errors import UserError
from clexlab.utils.targets import import_target

_BY_NAME: dict[str, type[RopeMethod]] = {}


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def methods() -> dict[str, type[RopeMethod]]:
    """Every method class of this package by its ``name``."""
    if not _BY_NAME:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _BY_NAME.update({cls.name: cls for cls in _subclasses(RopeMethod) if cls.name})
    return _BY_NAME


def method_class(rope: dict[str, Any]) -> type[RopeMethod]:
    """The class a ``rope`` node names (``_target_``, else ``name``)."""
    target = rope.get("_target_")
    if target:
        cls = import_target(target, "rope._target_", RopeMethod)
        name = rope.get("name")
        if name is not None and name != cls.name:
            raise UserError(f"rope.name={name} does not match rope._target_ ({cls.name}): pick rope=<option> instead")
        return cls
    name = rope.get("name")
    known = methods()
    if name not in known:
        raise UserError(f"rope.name must be one of {sorted(known)}, got {name!r}: pick rope=<method>")
    return known[name]


def method_from_config(rope: str | dict[str, Any], nodes: dict[str, Any] | None = None) -> RopeMethod:
    """Build the method a ``rope`` node (or a bare method name) describes.

    Args:
        rope: the ``rope`` node (``_target_``, ``name``, ``factor`` and the method's options), or a name.
        nodes: other top-level config nodes; a method whose class declares
            ``config_node`` (CLEX: ``"clex"``) takes that node's keys as options too.

    Raises:
        UserError: an unknown method or option, or a value the method refuses.
    """
    rope = {"name": rope} if isinstance(rope, str) else dict(rope)
    cls = method_class(rope)
    options = {k: v for k, v in rope.items() if k not in ("_target_", "name")}
    node = getattr(cls, "config_node", None)
    if node:
        options = {**dict((nodes or {}).get(node) or {}), **options}
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        where = f"rope.{unknown[0]}" if unknown[0] in rope else f"{node}.{unknown[0]}"
        allowed = sorted(k for k in accepted if k != "self")
        raise UserError(f"{where} is not an option of rope={cls.name}; its options: {', '.join(allowed)}")
    return cls(**options)


__all__ = ["FrequencyMethod", "RopeMethod", "method_class", "method_from_config", "methods"]
