"""Static NTK-aware scaling (bloc97, 2023): ``base' = base * factor^(d/(d-2))``.

In log space that is a shift of frequency ``i`` by ``-(2i/(d-2)) log factor``,
applied to the model's own log-frequencies: on plain RoPE exactly the larger
base (transformers has no static NTK type; its ``dynamic`` type uses the same
formula with a factor chosen per length), on a scaled model the same shift on
top of its own frequencies. d is the rotary dimension.
"""

from __future__ import annotations

import math

import torch

from clexlab.rope.methods.base import FrequencyMethod, dims_index
from clexlab.rope.own import OwnRope


def ntk_shift(own: OwnRope, alpha: float) -> torch.Tensor:
    """float64 ``log inv_freq`` of the model's own frequencies moved by NTK-aware scaling with factor ``alpha``."""
    return own.log_inv_freq() - dims_index(own) / (own.rotary_dim - 2) * math.log(alpha)


class NTKScaling(FrequencyMethod):
    name = "ntk"
    min_rotary_dim = 4  # the NTK rule divides by d - 2

    def frequencies(self, own: OwnRope, train_length: int) -> tuple[torch.Tensor, float]:
        return ntk_shift(own, float(self.factor)).exp(), own.attention_scaling
