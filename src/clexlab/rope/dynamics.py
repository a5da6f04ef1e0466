"""The CLEX dynamics network: how RoPE log-frequencies move with the scale t.

State ``z(t) = log inv_freq(t)`` (``head_dim/2`` numbers). The vector field is

    dz/dt = W_down · act(W_up · (z + log theta_ntk(t))) + d/dt log theta_ntk(t)

with ``theta_ntk`` the NTK-aware frequencies for ``alpha = 2t - 1``. ``W_down``
starts at zero, so an untrained network integrates to exactly the NTK schedule.
One network is shared by every layer and head. Pure torch on purpose: the
model code must not depend on Lightning, Hydra or W&B.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clexlab.rope.ntk import ntk_log_inv_freq, ntk_log_inv_freq_rate

ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU}


class CLEXDynamics(nn.Module):
    """Vector field ``f(t, z)`` of the CLEX ODE, callable as ``torchdiffeq`` expects.

    Args:
        head_dim: attention head dimension ``d``; the state has ``d/2`` entries.
        base: RoPE base (``rope_theta``) of the model being extended.
        param_factor: width multiplier ``p``; the hidden layer has ``p * d`` units.
        act: ``"tanh"`` (the paper's) or ``"silu"``.
    """

    def __init__(self, head_dim: int, base: float, param_factor: int = 1, act: str = "tanh") -> None:
        super().__init__()
        if head_dim % 2 or head_dim < 4:
            raise ValueError(f"head_dim must be even and >= 4, got {head_dim}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        self.head_dim = head_dim
        self.base = float(base)
        self.act_name = act
        self.act = ACTIVATIONS[act]()
        # Shapes follow the released CLEX checkpoints ([d/2, p*d] and [p*d, d/2])
        # so their weights map onto this module one to one.
        self.up_proj = nn.Parameter(torch.empty(head_dim // 2, param_factor * head_dim))
        self.down_proj = nn.Parameter(torch.empty(param_factor * head_dim, head_dim // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform ``W_up`` and zero ``W_down``: the untrained field is pure NTK."""
        nn.init.kaiming_uniform_(self.up_proj, a=math.sqrt(5))
        nn.init.zeros_(self.down_proj)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Evaluate ``dz/dt`` at time ``t`` (0-d tensor) and state ``z`` (``[..., d/2]``)."""
        t = t.to(z.device)
        x = z + ntk_log_inv_freq(t, self.head_dim, self.base)
        hidden = self.act(x @ self.up_proj.float())
        return hidden @ self.down_proj.float() + ntk_log_inv_freq_rate(t, self.head_dim)
