"""Start a run from another run's weights (not its optimizer or step)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from clexlab.utils.errors import UserError

# Keys a change of RoPE method may add or drop: the CLEX ODE weights.
_ROPE_KEYS = ".rotary_emb."


def load_weights_from(module: nn.Module, path: str | Path) -> None:
    """Copy the weights of a clexlab checkpoint into ``module``.

    Only the RoPE method's own parameters (the CLEX ODE) may be missing or
    extra, so a plain-RoPE base model can continue with CLEX or a baseline.

    Raises:
        UserError: unreadable file, or a checkpoint of another model shape.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise UserError(f"init_from={path} is not a readable checkpoint ({type(err).__name__})") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"init_from={path} holds no state_dict")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise UserError(f"init_from={path} is from a model of another shape: {str(err).splitlines()[1].strip()}") from err
    other = [k for k in (*result.missing_keys, *result.unexpected_keys) if _ROPE_KEYS not in k]
    if other:
        raise UserError(f"init_from={path} does not match this model (e.g. {other[0]!r}): same model.* settings needed")
