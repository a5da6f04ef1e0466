"""Check a ``_target_`` node's options against the class it names, before anything is built.

The trainer, data, corpus, callback and logger nodes are plain keyword
arguments of a class (Lightning's ``Trainer``, clexlab's callbacks, ...).
Their schema is that class's signature: a key it does not take is a typo (the
message suggests the nearest name), a value that does not match the parameter's
annotation is the wrong type, and :data:`RANGES` gives the range of the option
names clexlab's configs use. Every mistake is one line naming the full key.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from typing import Any, Callable, Literal, Union

from clexlab.utils.errors import UserError


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low:g}"


_FRACTION = ((lambda v: 0 <= v <= 1), "in [0, 1]")
_POSITIVE = ((lambda v: v > 0), "> 0")

#: Ranges by option name, wherever it appears (a list's elements are checked one by one).
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **{name: _at_least(1) for name in (
        "batch_size", "max_tokens", "samples", "max_skips", "num_nodes", "log_every_n_steps",
        "accumulate_grad_batches", "seq_len", "val_max_windows", "max_new_tokens", "stride", "min_tokens",
        "chunks",
    )},
    **{name: _at_least(0) for name in (
        "num_workers", "every_n_train_steps", "every_n_steps", "gradient_clip_val", "num_sanity_val_steps",
        "limit_val_batches", "limit_train_batches", "limit_test_batches",
    )},
    **{name: _FRACTION for name in (
        "val_fraction", "test_fraction", "fraction", "p_one", "contiguous_fraction", "depths",
    )},
    **{name: _POSITIVE for name in ("multiples", "lengths", "val_check_interval")},
    "max_steps": ((lambda v: v >= -1), "-1 (no limit) or >= 0 (0: no training, e.g. a method applied at inference)"),
    "max_epochs": ((lambda v: v is None or v >= -1), ">= -1"),
    "save_top_k": _at_least(-1),
}


def check_target_options(node: dict[str, Any], key: str, *, provided: tuple[str, ...] = ()) -> None:
    """Check every option of ``node`` against the signature of the class its ``_target_`` names.

    Args:
        node: a resolved plain ``_target_`` node (nested ``_target_`` nodes are checked too).
        key: its config key, for messages (``trainer``, ``callbacks.long_context_eval``).
        provided: arguments the code passes itself (``callbacks``, ``logger``, ``tokenizer``), which a
            config must not set.

    Raises:
        UserError: an unknown option, a value of the wrong type or out of range, or a ``_target_`` that
            does not import.
    """
    from clexlab.utils.targets import import_target

    target = node.get("_target_")
    if not isinstance(target, str):
        raise UserError(f"{key}._target_ must be a class path (package.module.Class), got {target!r}")
    cls = import_target(target, f"{key}._target_", object)
    parameters, hints, open_kwargs = _signature(cls)
    for name, value in node.items():
        if name.startswith("_"):
            continue
        full = f"{key}.{name}"
        if name in provided:
            raise UserError(f"{full} is set by clexlab itself; remove it from the config")
        if name not in parameters:
            if open_kwargs:  # passed on to a parent class: its name still has a range
                _check_range(full, name, value)
                continue
            close = difflib.get_close_matches(name, parameters, n=1)
            hint = f"did you mean {key}.{close[0]}?" if close else f"{cls.__name__} takes {sorted(parameters)}"
            raise UserError(f"{full} is not an option of {target}: {hint}")
        if isinstance(value, dict) and "_target_" in value:
            check_target_options(value, full)
            continue
        if name in hints and not _matches(value, hints[name]):
            raise UserError(f"{full} must be {_describe(hints[name])}, got {value!r}")
        _check_range(full, name, value)


def _signature(cls: type) -> tuple[list[str], dict[str, Any], bool]:
    """Parameter names, their resolved annotations (where they resolve) and whether ``**kwargs`` is open."""
    init = cls.__init__
    params = [p for p in inspect.signature(init).parameters.values() if p.name != "self"]
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    try:
        hints = typing.get_type_hints(init)
    except (NameError, TypeError, AttributeError):  # annotations naming types only imported for type checkers: names only
        hints = {}
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, {n: h for n, h in hints.items() if n in names}, open_kwargs


def _matches(value: Any, hint: Any) -> bool:
    """Whether a config value can be ``hint`` (unknown or class-typed annotations accept anything)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, (typing.TypeVar, str)):
        return True
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (Union, types.UnionType):
        return any(_matches(value, member) for member in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        homogeneous = len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)
        inner = args[0] if args and homogeneous else Any
        return all(_matches(v, inner) for v in value)
    if origin in (dict, collections.abc.Mapping) or hint is dict:
        return isinstance(value, dict)
    return True  # a class (a Path, a Strategy, a timedelta, ...): Hydra or the class itself converts


def _describe(hint: Any) -> str:
    """``int``, ``one of 'a', 'b' or None``: the annotation in words, Literal members spelled out."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    literals = [repr(a) for m in members if typing.get_origin(m) is Literal for a in typing.get_args(m)]
    names = [getattr(m, "__name__", str(m).replace("typing.", "")) for m in members if typing.get_origin(m) is not Literal]
    if literals:
        return "one of " + ", ".join(literals + [n for n in names if n != "NoneType"]) + (" or None" if "NoneType" in names else "")
    return " or ".join(n.replace("NoneType", "None") for n in names)


def _check_range(full: str, name: str, value: Any) -> None:
    rule = RANGES.get(name)
    if rule is None or value is None:
        return
    ok, says = rule
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue  # a non-number where the signature allows one (e.g. val_check_interval as a time string)
        if not ok(item):
            raise UserError(f"{full} must be {says}, got {value!r}")
