"""A rotary module with fixed frequencies: what PI, NTK, YaRN and Llama-3 scaling install.

It computes ``(cos, sin)`` exactly as transformers' rotary modules do
(``positions x inv_freq`` in float32 outside autocast, duplicated halves, times
the attention scaling, cast to the activations' dtype), from frequencies a
method derived from the model's own (:mod:`clexlab.rope.own`).

The frequencies are a float64 master copy on the CPU, not a buffer: casting the
model (``model.to(torch.bfloat16)``, a bf16-true precision plugin) would round
a buffer to bf16, which frequencies near 1e-4 and positions in the tens of
thousands cannot afford. A float32 copy is made on each device on first use.
"""

from __future__ import annotations

import torch
from torch import nn

from clexlab.rope.own import OwnRope


class FrequencyCache:
    """float32 copies of a CPU float64 frequency vector, one per device (made on first use)."""

    def __init__(self, values: torch.Tensor) -> None:
        self.master = values.detach().double().cpu()
        self._copies: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device | str) -> torch.Tensor:
        """The float32 copy on ``device``."""
        device = torch.device(device)
        copy = self._copies.get(device)
        if copy is None:
            copy = self._copies[device] = self.master.to(device=device, dtype=torch.float32)
        return copy


def rotary_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` ``[batch, seq, rotary_dim]`` as transformers computes them."""
    device_type = positions.device.type if positions.device.type in ("cuda", "cpu") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        freqs = positions[..., None].float() * inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if attention_scaling != 1.0:
            cos, sin = cos * attention_scaling, sin * attention_scaling
    return cos.to(dtype), sin.to(dtype)


class StaticRotary(nn.Module):
    """RoPE with fixed inverse frequencies and attention scaling.

    Args:
        inv_freq: ``[rotary_dim / 2]`` inverse frequencies.
        attention_scaling: factor on cos/sin (YaRN's temperature, the model's own scaling).
        own: the model's own RoPE these were derived from (kept so a later install starts there).
        method: a short description for ``repr`` (e.g. ``yarn x16``).
    """

    def __init__(self, inv_freq: torch.Tensor, attention_scaling: float, own: OwnRope, method: str = "") -> None:
        super().__init__()
        self.frequencies = FrequencyCache(inv_freq)
        self.attention_scaling = float(attention_scaling)
        self.own = own
        self.method = method

    @property
    def inv_freq(self) -> torch.Tensor:
        """float32 inverse frequencies on the CPU (transformers' rotary modules expose the same name)."""
        return self.frequencies.on("cpu")

    def inv_freq_for_length(self, length: int) -> torch.Tensor:
        """The frequencies of a forward over ``length`` positions (the same at every length)."""
        return self.inv_freq

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` of shape ``[batch, seq, rotary_dim]`` in ``x.dtype``."""
        return rotary_cos_sin(position_ids, self.frequencies.on(position_ids.device), self.attention_scaling, x.dtype)

    def extra_repr(self) -> str:
        return f"{self.method}, rotary_dim={2 * self.frequencies.master.numel()}, attention_scaling={self.attention_scaling:g}"
