"""Dynamic NTK (emozilla, 2023): NTK-aware scaling whose factor follows the length of each forward.

For a forward over n > L positions, ``alpha = factor * n / L - (factor - 1)``
(so ``factor = 2`` gives ``alpha = 2t - 1``, the schedule an untrained CLEX
follows) and the model's own log-frequencies move by ``-(2i/(d-2)) log alpha``
(:func:`~clexlab.rope.methods.ntk.ntk_shift`); up to L nothing changes. On
plain RoPE this is transformers' ``dynamic`` type evaluated at each length
afresh (transformers' module keeps the frequencies of the longest length seen
until a sequence shorter than L resets them; this one is a function of the
current length only).
"""

from __future__ import annotations

import torch
from torch import nn

from clexlab.arch import architecture_of
from clexlab.rope.methods.base import RopeMethod
from clexlab.rope.methods.ntk import ntk_shift
from clexlab.rope.own import OwnRope, own_rope
from clexlab.rope.static_rotary import FrequencyCache, rotary_cos_sin


class DynamicNTKRotary(nn.Module):
    """RoPE whose NTK factor is chosen from the largest position of each forward.

    Args:
        own: the model's own RoPE.
        train_length: L.
        factor: the dynamic NTK factor.
    """

    def __init__(self, own: OwnRope, train_length: int, factor: float) -> None:
        super().__init__()
        self.own = own
        self.train_length = int(train_length)
        self.factor = float(factor)
        self.attention_scaling = own.attention_scaling
        self._by_alpha: dict[float, FrequencyCache] = {}

    def alpha(self, length: int) -> float:
        """The NTK factor of a forward over ``length`` positions (1 up to L)."""
        if length <= self.train_length:
            return 1.0
        return self.factor * length / self.train_length - (self.factor - 1)

    def _frequencies(self, length: int) -> FrequencyCache:
        alpha = self.alpha(length)
        cache = self._by_alpha.get(alpha)
        if cache is None:
            values = self.own.inv_freq.double() if alpha == 1.0 else ntk_shift(self.own, alpha).exp()
            cache = self._by_alpha[alpha] = FrequencyCache(values)
        return cache

    def inv_freq_for_length(self, length: int) -> torch.Tensor:
        """float32 frequencies of a forward over ``length`` positions."""
        return self._frequencies(int(length)).on("cpu")

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = int(position_ids.max().item()) + 1
        inv_freq = self._frequencies(length).on(position_ids.device)
        return rotary_cos_sin(position_ids, inv_freq, self.attention_scaling, x.dtype)

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}, train_length={self.train_length}"


class DynamicNTK(RopeMethod):
    """Dynamic NTK scaling with ``factor`` (2 by default in conf/rope/dynamic_ntk.yaml)."""

    name = "dynamic_ntk"
    min_rotary_dim = 4  # the NTK rule divides by d - 2

    def install(self, model: nn.Module, train_length: int) -> nn.Module:
        rotary = DynamicNTKRotary(own_rope(model), train_length, self.factor)
        architecture_of(model).set_rotary(model, rotary)
        return rotary
