"""Install the RoPE method a config names: CLEX or one of the baselines."""

from __future__ import annotations

from typing import Any

from torch import nn

from clexlab.rope.baselines import BASELINES, install_baseline
from clexlab.rope.install import install_clex
from clexlab.rope.log_scale import enable_log_scale

METHODS = (*BASELINES, "clex")


def install_rope(model: nn.Module, rope: dict[str, Any], train_length: int, clex: dict[str, Any]) -> None:
    """Install ``rope["name"]`` into ``model``.

    Args:
        model: a transformers causal LM.
        rope: the ``rope`` config node: ``name``, and for baselines ``factor``
            plus transformers options (``beta_fast``, ``beta_slow`` for yarn).
        train_length: L.
        clex: the ``clex`` config node (used when ``name == "clex"``).
    """
    name = rope["name"]
    if name == "clex":
        clex_rope = install_clex(
            model,
            train_length=train_length,
            max_scale=clex["max_scale"],
            param_factor=clex["param_factor"],
            act=clex["act"],
            time_dt=clex["time_dt"],
            solver=clex.get("solver", "fast"),
        )
        # A frozen ODE is the pure NTK schedule alpha = 2t - 1 (the reviewers' ablation).
        clex_rope.dynamics.requires_grad_(not clex.get("freeze", False))
        if clex.get("log_scale"):
            enable_log_scale(model, train_length)
    elif name in BASELINES:
        options = {k: rope[k] for k in ("beta_fast", "beta_slow") if rope.get(k) is not None}
        install_baseline(model, name, train_length, float(rope.get("factor", 1.0)), **options)
    else:
        raise ValueError(f"unknown rope {name!r}; choose one of {METHODS}")


def method_label(rope: dict[str, Any], clex: dict[str, Any], position_sampling: bool) -> str:
    """A short name for tables: ``clex``, ``clex-frozen``, ``yarn-x8+pos``, ``none``."""
    name = rope["name"]
    if name == "clex":
        label = "clex-frozen" if clex.get("freeze") else "clex"
        return label if position_sampling else f"{label}-contiguous"
    factor = float(rope.get("factor", 1.0))
    label = name if name == "none" or factor == 1 else f"{name}-x{factor:g}"
    return f"{label}+pos" if position_sampling else label
