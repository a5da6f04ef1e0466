"""The interface every RoPE method implements, and the shared shape of the frequency baselines.

A method is one class that its config names (``conf/rope/<name>.yaml``:
``_target_``), so adding one is one file here plus one config file, and no code
outside a method's own class compares method names. What the rest of clexlab
asks of a method:

* :meth:`RopeMethod.install`: put it into a model (through the model family's
  adapter, :mod:`clexlab.arch`), starting from the model's own RoPE;
* :meth:`RopeMethod.trainable_parameters` and :meth:`RopeMethod.optimizer_options`:
  what it trains, in its own AdamW group;
* :attr:`RopeMethod.samples_positions`, :attr:`RopeMethod.max_scale` and
  :meth:`RopeMethod.scale`: its default position scheme, the largest scale t
  the curriculum may draw for it, and how a training step tells it the t drawn;
* :meth:`RopeMethod.label`, :attr:`RopeMethod.exports`: its name in tables, and
  whether it writes the released CLEX format.

Pure torch: no Lightning, Hydra or W&B.
"""

from __future__ import annotations

import abc
import contextlib
import math
from typing import Any, ClassVar

import torch
from torch import nn

from clexlab.arch import architecture_of
from clexlab.rope.own import OwnRope, check_finite, own_rope
from clexlab.rope.static_rotary import StaticRotary
from clexlab.utils.errors import UserError


class RopeMethod(abc.ABC):
    """A way of extending a RoPE model's context window.

    Args:
        factor: the method's scale factor (target length / L) where it has one; 1 is the model as it is.

    Class attributes:
        name: the ``rope.name`` of its config (tables, results.json, W&B names).
        samples_positions: trains on the curriculum's spread positions unless
            ``train.position_sampling`` says otherwise (CLEX does; the others train contiguously).
        exports: writes the released CLEX format (``python -m clexlab.export``).
        uses_scale: its frequencies depend on the scale t a training step draws (CLEX).
        continuous_scale: it accepts a non-integer t.
        min_rotary_dim: fewest rotated dimensions per head its formula works with
            (NTK-style rules divide by ``d - 2``).
    """

    name: ClassVar[str] = ""
    samples_positions: ClassVar[bool] = False
    exports: ClassVar[bool] = False
    uses_scale: ClassVar[bool] = False
    continuous_scale: ClassVar[bool] = False
    min_rotary_dim: ClassVar[int] = 2

    def __init__(self, factor: float = 1.0) -> None:
        factor = number_option(factor, "rope.factor")
        if not factor >= 1:
            raise UserError(f"rope.factor must be >= 1 (target length / L), got {factor:g}")
        self.factor = factor

    @abc.abstractmethod
    def install(self, model: nn.Module, train_length: int) -> nn.Module:
        """Put the method into ``model`` (trained at ``train_length`` tokens); return its rotary module."""

    def check_rotary_dim(self, rotary_dim: int) -> None:
        """Refuse a model that rotates too few dimensions per head for this method (one line)."""
        if rotary_dim < self.min_rotary_dim:
            raise UserError(
                f"rope={self.name} needs at least {self.min_rotary_dim} rotated dimensions per head, the model "
                f"rotates {rotary_dim}: raise model.head_dim (or hidden_size/num_heads, partial_rotary_factor)"
            )

    def setup_cost(self) -> tuple[float, str]:
        """Rough CPU seconds the method spends preparing its frequencies up to its largest scale, and the
        setting that sets them (``(0, "")`` for a rule in closed form)."""
        return 0.0, ""

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The method's own parameters that train (none for a frequency rule)."""
        return []

    def optimizer_options(self) -> dict[str, Any]:
        """AdamW options of the method's parameter group (``lr``, ``weight_decay``); empty: the model's."""
        return {}

    @property
    def max_scale(self) -> int | None:
        """The largest scale t a curriculum may draw for this method (None: no limit of its own)."""
        return None

    def scale(self, model: nn.Module, t: float) -> contextlib.AbstractContextManager:
        """Context in which the model's forwards use the curriculum's scale ``t`` (nothing for most methods)."""
        return contextlib.nullcontext()

    def label(self, position_sampling: bool) -> str:
        """A short name for tables: ``yarn-x16``, ``none``, ``pi-x8+pos``, ``clex-frozen``."""
        label = self.name if self.factor == 1 else f"{self.name}-x{self.factor:g}"
        return f"{label}+pos" if position_sampling else label

    def describe(self) -> str:
        """One phrase for reports (the dry run's first line)."""
        return self.label(False)

    def summary(self) -> dict[str, Any]:
        """What results.json records about the method."""
        return {"rope": self.name, "rope_factor": self.factor}


class FrequencyMethod(RopeMethod):
    """A method that maps the model's own frequencies to new fixed ones (PI, NTK, YaRN, Llama-3).

    Subclasses implement :meth:`frequencies`; installing replaces the model's
    rotary module with a :class:`~clexlab.rope.static_rotary.StaticRotary` that
    holds the result.
    """

    @abc.abstractmethod
    def frequencies(self, own: OwnRope, train_length: int) -> tuple[torch.Tensor, float]:
        """``(inv_freq, attention_scaling)`` derived from the model's own RoPE ``own`` for train length L."""

    def install(self, model: nn.Module, train_length: int) -> nn.Module:
        own = own_rope(model)
        inv_freq, scaling = self.frequencies(own, int(train_length))
        rotary = StaticRotary(check_finite(inv_freq.float(), self.name), scaling, own, self.describe())
        architecture_of(model).set_rotary(model, rotary)
        return rotary


def dims_index(own: OwnRope) -> torch.Tensor:
    """``2i`` for each frequency ``i``, float64 (the exponent numerator of plain RoPE)."""
    return torch.arange(0, own.rotary_dim, 2, dtype=torch.float64)


def number_option(value: Any, key: str) -> float:
    """A method option that must be a finite number, as a float; one line naming ``key`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{key} must be a finite number, got {value!r}")
    return float(value)

