"""Start a run from another run's weights (not its optimizer or step)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from clexlab.arch import architecture_of
from clexlab.utils.errors import UserError


def load_weights_from(module: nn.Module, path: str | Path) -> None:
    """Copy the weights of a clexlab checkpoint into ``module`` (a :class:`~clexlab.models.LongContextLM`).

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
    # Only the RoPE method's own parameters may come or go (the CLEX ODE, under the rotary module);
    # the LightningModule keeps the causal LM as ``module.model``, hence the "model." in front.
    prefix = "model." + architecture_of(module.model).rotary_prefix(module.model)
    other = [k for k in (*result.missing_keys, *result.unexpected_keys) if not k.startswith(prefix)]
    if other:
        raise UserError(f"init_from={path} does not match this model (e.g. {other[0]!r}): same model.* settings needed")
