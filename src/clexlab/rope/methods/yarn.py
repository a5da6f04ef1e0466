"""YaRN (Peng et al. 2023): NTK-by-parts interpolation and an attention temperature.

Frequency ``i`` is divided by the factor where it turns fewer than
``beta_slow`` times within L, kept where it turns more than ``beta_fast`` times,
and blended linearly in between (over the dimension index, as transformers'
``yarn`` computes it, ``truncate`` on); cos/sin are multiplied by
``0.1 ln(factor) + 1``. The blend is applied to the model's own frequencies and
its attention scaling is multiplied: on plain RoPE this is transformers' ``yarn``
with ``original_max_position_embeddings = L``; on a model that already carries
YaRN (long Qwen2.5) or Llama-3 scaling it extends those further by ``factor``.
"""

from __future__ import annotations

import math

import torch

from clexlab.rope.methods.base import FrequencyMethod, number_option
from clexlab.rope.own import OwnRope
from clexlab.utils.errors import UserError


def yarn_mscale(factor: float) -> float:
    """YaRN's attention temperature ``0.1 ln(factor) + 1`` (1 for factor <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def correction_range(beta_fast: float, beta_slow: float, dim: int, base: float, length: int) -> tuple[int, int]:
    """Dimension indices where the blend starts and ends (YaRN's ``find_correction_range``, truncated)."""

    def dim_for(rotations: float) -> float:
        return (dim * math.log(length / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = math.floor(dim_for(beta_fast)), math.ceil(dim_for(beta_slow))
    return max(low, 0), min(high, dim - 1)


class YaRN(FrequencyMethod):
    """YaRN with ``beta_fast`` / ``beta_slow`` (32 / 1, the paper's)."""

    name = "yarn"

    def __init__(self, factor: float = 1.0, beta_fast: float | None = 32, beta_slow: float | None = 1) -> None:
        super().__init__(factor)
        self.beta_fast = number_option(32 if beta_fast is None else beta_fast, "rope.beta_fast")
        self.beta_slow = number_option(1 if beta_slow is None else beta_slow, "rope.beta_slow")
        if not self.beta_fast > self.beta_slow > 0:
            raise UserError(f"rope.beta_fast must exceed rope.beta_slow > 0, got {self.beta_fast:g} and {self.beta_slow:g}")

    def frequencies(self, own: OwnRope, train_length: int) -> tuple[torch.Tensor, float]:
        half = own.inv_freq.numel()
        low, high = correction_range(self.beta_fast, self.beta_slow, own.rotary_dim, own.base, train_length)
        if low == high:
            high += 0.001  # as transformers: no division by zero
        ramp = torch.clamp((torch.arange(half, dtype=torch.float32) - low) / (high - low), 0, 1)
        keep = (1 - ramp).double()  # 1: extrapolate (keep), 0: interpolate (divide by the factor)
        inv = own.inv_freq.double()
        return inv / self.factor * (1 - keep) + inv * keep, own.attention_scaling * yarn_mscale(self.factor)
