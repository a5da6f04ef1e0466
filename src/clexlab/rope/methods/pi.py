"""Position interpolation (Chen et al. 2023): every frequency divided by the factor.

On a model with plain RoPE this is transformers' ``linear`` rope type; on one
with scaled RoPE (``llama3``, ``yarn``, ...) it divides the model's own
frequencies, i.e. positions are interpolated on top of what the model does.
"""

from __future__ import annotations

import torch

from clexlab.rope.methods.base import FrequencyMethod
from clexlab.rope.own import OwnRope


class PositionInterpolation(FrequencyMethod):
    name = "pi"

    def frequencies(self, own: OwnRope, train_length: int) -> tuple[torch.Tensor, float]:
        return own.inv_freq.double() / self.factor, own.attention_scaling
