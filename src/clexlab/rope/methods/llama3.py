"""Llama-3 scaling (Meta, 2024): long wavelengths divided by the factor, short ones kept, a smooth blend between.

Wavelengths longer than ``L / low_freq_factor`` are interpolated by ``factor``,
those shorter than ``L / high_freq_factor`` kept, and in between blended with
``(L / wavelength - low) / (high - low)``. Applied to the model's own
frequencies: on plain RoPE it is transformers' ``llama3`` type with
``original_max_position_embeddings = L``.
"""

from __future__ import annotations

import torch

from clexlab.rope.methods.base import FrequencyMethod, number_option
from clexlab.rope.own import OwnRope, wavelengths
from clexlab.utils.errors import UserError


class Llama3Scaling(FrequencyMethod):
    name = "llama3"

    def __init__(self, factor: float = 1.0, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0) -> None:
        super().__init__(factor)
        self.low_freq_factor = number_option(low_freq_factor, "rope.low_freq_factor")
        self.high_freq_factor = number_option(high_freq_factor, "rope.high_freq_factor")
        if not self.high_freq_factor > self.low_freq_factor > 0:
            raise UserError(
                f"rope.high_freq_factor must exceed rope.low_freq_factor > 0, got {self.high_freq_factor:g} "
                f"and {self.low_freq_factor:g}"
            )

    def frequencies(self, own: OwnRope, train_length: int) -> tuple[torch.Tensor, float]:
        inv = own.inv_freq.double()
        wavelen = wavelengths(inv)
        low_wavelen, high_wavelen = train_length / self.low_freq_factor, train_length / self.high_freq_factor
        scaled = torch.where(wavelen > low_wavelen, inv / self.factor, inv)
        smooth = (train_length / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
        blended = (1 - smooth) * scaled / self.factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return torch.where(medium, blended, scaled), own.attention_scaling
