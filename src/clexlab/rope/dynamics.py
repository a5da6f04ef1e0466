"""The CLEX dynamics network: how RoPE log-frequencies move with the scale t.

State ``z(t) = log inv_freq(t)`` (``d/2`` numbers, d the rotary dimension). The
vector field is

    dz/dt = W_down · act(W_up · (z + log theta_emb(t))) + d/dt log theta_ntk(t)

with ``theta_ntk`` the NTK-aware frequencies for ``alpha = 2t - 1`` of the
model's own RoPE ``z(1)`` (:mod:`clexlab.rope.ntk`), and ``theta_emb`` the
same schedule as the network's time embedding. The two are one and the same
except for the released CLEX checkpoints, whose code embeds time with the NTK
frequencies of base 10000 whatever the model's own base
(:mod:`clexlab.models.official_clex` passes that in). ``W_down`` starts at
zero, so an untrained network integrates to exactly the NTK schedule. One
network is shared by every layer and head. Pure torch on purpose: the model
code must not depend on Lightning, Hydra or W&B.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clexlab.rope.ntk import ntk_log_inv_freq_from, ntk_log_inv_freq_rate, ntk_slope, rope_log_inv_freq

ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU}


class CLEXDynamics(nn.Module):
    """Vector field ``f(t, z)`` of the CLEX ODE, callable as ``torchdiffeq`` expects.

    Args:
        head_dim: the rotary dimension ``d`` (the head dimension unless only part
            of each head is rotated); the state has ``d/2`` entries.
        base: RoPE base (``rope_theta``) of the model being extended.
        param_factor: width multiplier ``p``; the hidden layer has ``p * d`` units.
        act: ``"tanh"`` (the paper's) or ``"silu"``.
        log_inv_freq0: the model's own log-frequencies at t = 1 (``[d/2]``);
            default: plain RoPE ``-(2i/d) log base``.
        embedding_log_inv_freq: the log-frequencies the time embedding starts
            from; default: ``log_inv_freq0``.
    """

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        param_factor: int = 1,
        act: str = "tanh",
        *,
        log_inv_freq0: torch.Tensor | None = None,
        embedding_log_inv_freq: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if head_dim % 2 or head_dim < 4:
            raise ValueError(f"head_dim must be even and >= 4, got {head_dim}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        self.head_dim = head_dim
        self.base = float(base)
        self.act_name = act
        self.act = ACTIVATIONS[act]()
        z0 = rope_log_inv_freq(head_dim, base, torch.float64) if log_inv_freq0 is None else log_inv_freq0
        emb = z0 if embedding_log_inv_freq is None else embedding_log_inv_freq
        for name, value in (("log_inv_freq0", z0), ("embedding_log_inv_freq", emb)):
            if value.shape != (head_dim // 2,):
                raise ValueError(f"{name} must have {head_dim // 2} entries, got shape {tuple(value.shape)}")
        # float64 masters on the CPU, not buffers: a cast of the model to bf16 must not round them.
        self.z0 = z0.detach().double().cpu()
        self.e0 = emb.detach().double().cpu()
        # Shapes follow the released CLEX checkpoints ([d/2, p*d] and [p*d, d/2])
        # so their weights map onto this module one to one.
        self.up_proj = nn.Parameter(torch.empty(head_dim // 2, param_factor * head_dim))
        self.down_proj = nn.Parameter(torch.empty(param_factor * head_dim, head_dim // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform ``W_up`` and zero ``W_down``: the untrained field is pure NTK."""
        nn.init.kaiming_uniform_(self.up_proj, a=math.sqrt(5))
        nn.init.zeros_(self.down_proj)

    def ntk_log_inv_freq(self, t: torch.Tensor) -> torch.Tensor:
        """``log theta_ntk(t)`` (float32): the solution of the untrained ODE, from the model's own frequencies."""
        return ntk_log_inv_freq_from(t.double(), self.z0).float()

    def drive(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z0, e0, slope)`` in float64 on ``device``: the NTK schedule is ``z0 - slope log alpha``,
        the time embedding ``e0 - slope log alpha``."""
        slope = ntk_slope(self.head_dim // 2, torch.float64, device)
        return self.z0.to(device), self.e0.to(device), slope

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Evaluate ``dz/dt`` at time ``t`` (0-d tensor) and state ``z`` (``[..., d/2]``)."""
        t = t.to(z.device)
        x = z + ntk_log_inv_freq_from(t.float(), self.e0.to(device=z.device, dtype=torch.float32))
        hidden = self.act(x @ self.up_proj.float())
        return hidden @ self.down_proj.float() + ntk_log_inv_freq_rate(t, self.head_dim)
