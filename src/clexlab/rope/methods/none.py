"""``rope=none``: the model as it is (its own RoPE, whatever its rope_type), trained contiguously."""

from __future__ import annotations

from torch import nn

from clexlab.arch import architecture_of
from clexlab.rope.methods.base import RopeMethod


class ModelRope(RopeMethod):
    """Leave the model's rotary module untouched: plain continued training, or evaluation as released."""

    name = "none"

    def install(self, model: nn.Module, train_length: int) -> nn.Module:
        return architecture_of(model).rotary(model)

    def label(self, position_sampling: bool) -> str:
        return "none+pos" if position_sampling else "none"
