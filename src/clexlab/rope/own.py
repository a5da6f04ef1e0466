"""A model's own RoPE: the frequencies every clexlab method starts from.

Released checkpoints already carry scaled RoPE (Llama-3.1: ``llama3``; long
Qwen2.5: ``yarn``; Phi-3 long: ``longrope``), so a method installed on such a
model must start from the model's own frequencies, never from
``base^(-2i/d)``. They are read through transformers itself: the model's own
rotary class is built from its config (on the CPU, so a model on the meta
device works too), and its ``inv_freq`` and ``attention_scaling`` are what the
model computes at t = 1, whatever its ``rope_type``. A rotary module clexlab
installed remembers the :class:`OwnRope` it was built from, so installing
again starts from the same place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from clexlab.arch import architecture_of
from clexlab.rope.ntk import rope_log_inv_freq


@dataclass(frozen=True)
class OwnRope:
    """The model's RoPE at t = 1.

    Attributes:
        inv_freq: float32 inverse frequencies, ``[rotary_dim / 2]``, on the CPU.
        attention_scaling: the factor transformers multiplies cos/sin by (YaRN's, LongRoPE's; else 1).
        rope_type: the model's ``rope_type`` (``default``, ``llama3``, ``yarn``, ...).
        base: ``rope_theta``.
        parameters: the model's whole ``rope_parameters``.
    """

    inv_freq: torch.Tensor
    attention_scaling: float
    rope_type: str
    base: float
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def rotary_dim(self) -> int:
        """Rotated dimensions per head (twice the number of frequencies)."""
        return 2 * int(self.inv_freq.numel())

    def log_inv_freq(self) -> torch.Tensor:
        """float64 ``log inv_freq``: where CLEX's ODE starts.

        Plain RoPE's is the formula itself, ``-(2i/d) log base`` in float64 (what
        clexlab has always integrated from); transformers' float32 ``base ** (2i/d)``
        differs from it in the last bit, within float tolerance of the logits. Any
        other rope type: the log of the model's own (float32) frequencies.
        """
        if self.rope_type == "default":
            return rope_log_inv_freq(self.rotary_dim, self.base, torch.float64)
        return self.inv_freq.double().log()

    @classmethod
    def plain(cls, rotary_dim: int, base: float) -> OwnRope:
        """Plain RoPE ``base^(-2i/d)`` computed as transformers computes it (float32)."""
        inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).float() / rotary_dim))
        return cls(inv_freq, 1.0, "default", float(base), {"rope_type": "default", "rope_theta": float(base)})


def own_rope(model: nn.Module) -> OwnRope:
    """The RoPE ``model`` uses at t = 1 (its own, or the one a clexlab rotary was built from).

    Raises:
        ValueError: when the rotary module's frequencies do not have ``rotary_dim / 2`` entries
            (a transformers version that lays them out differently).
    """
    arch = architecture_of(model)
    rotary = arch.rotary(model)
    recorded = getattr(rotary, "own", None)
    if isinstance(recorded, OwnRope):
        return recorded
    config = model.config
    with torch.device("cpu"):
        fresh = type(rotary)(config=config)
    inv_freq = getattr(fresh, "original_inv_freq", None)
    inv_freq = (inv_freq if inv_freq is not None else fresh.inv_freq).detach().float().cpu()
    expected = arch.rotary_dim(config) // 2
    if inv_freq.ndim != 1 or inv_freq.numel() != expected:
        raise ValueError(
            f"{type(rotary).__name__} holds {tuple(inv_freq.shape)} frequencies, expected {expected} "
            "(rotary_dim / 2): this transformers version lays RoPE out differently"
        )
    params = arch.rope_parameters(config)
    scaling = float(getattr(fresh, "attention_scaling", 1.0) or 1.0)
    base = float(params.get("rope_theta", 10000.0))
    return OwnRope(inv_freq, scaling, str(params.get("rope_type", "default")), base, params)


def check_finite(inv_freq: torch.Tensor, what: str) -> torch.Tensor:
    """``inv_freq`` if every entry is finite and positive, else a ValueError naming ``what``."""
    if not bool(torch.isfinite(inv_freq).all()) or not bool((inv_freq > 0).all()):
        raise ValueError(f"{what} gave non-finite or non-positive RoPE frequencies")
    return inv_freq


def wavelengths(inv_freq: torch.Tensor) -> torch.Tensor:
    """``2 pi / inv_freq``: tokens per full turn of each frequency."""
    return 2 * math.pi / inv_freq
