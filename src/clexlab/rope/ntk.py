"""NTK-aware RoPE frequencies as a function of the continuous scale t.

CLEX uses the NTK-aware schedule with ``alpha = 2t - 1`` both as a bias inside
the dynamics network and as the exact solution of the untrained ODE. Working
in log space makes the schedule linear in ``log alpha``: starting from the
model's own log-frequencies ``z0`` (plain RoPE: ``-(2i/d) log base``),

    log theta_i(t) = z0_i - (2i/(d-2)) log(alpha)

(on plain RoPE exactly ``base' = base * alpha^(d/(d-2))``), so its time
derivative is ``-(2i/(d-2)) * 2/alpha``, whatever ``z0`` is. d is the rotary
dimension (twice the number of frequencies).
"""

from __future__ import annotations

import math

import torch


def rope_log_inv_freq(head_dim: int, base: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Log of the original RoPE inverse frequencies ``base^(-2i/d)``, shape ``[d/2]``."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    return (-exponent * math.log(base)).to(dtype)


def ntk_alpha(t: torch.Tensor | float) -> torch.Tensor | float:
    """NTK scaling factor used by CLEX: ``alpha = 2t - 1``, clamped at 1 for t < 1."""
    if isinstance(t, torch.Tensor):
        return torch.clamp(2.0 * t - 1.0, min=1.0)
    return max(2.0 * t - 1.0, 1.0)


def ntk_slope(num_freqs: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``2i / (d - 2)`` for each frequency i (d = 2 * num_freqs): how fast ``log theta_i`` falls with ``log alpha``."""
    d = 2 * num_freqs
    return torch.arange(0, d, 2, dtype=dtype, device=device) / (d - 2)


def ntk_log_inv_freq_from(t: torch.Tensor, log_inv_freq0: torch.Tensor) -> torch.Tensor:
    """``log theta_ntk(t)``: the log-frequencies ``log_inv_freq0`` moved by NTK-aware scaling with ``alpha = 2t - 1``."""
    z0 = log_inv_freq0.to(t.device)
    log_alpha = torch.log(ntk_alpha(t.to(z0.dtype)))
    return z0 - ntk_slope(z0.numel(), z0.dtype, z0.device) * log_alpha


def ntk_log_inv_freq(t: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """``log theta_ntk(t)`` of plain RoPE: ``base' = base * alpha^(d/(d-2))``, float32."""
    index = torch.arange(0, head_dim, 2, dtype=torch.float32, device=t.device)
    log_alpha = torch.log(ntk_alpha(t.float()))
    return -(index / head_dim) * math.log(base) - index / (head_dim - 2) * log_alpha


def ntk_log_inv_freq_rate(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``d/dt log theta_ntk(t)`` (zero below t = 1, where alpha is clamped)."""
    t = t.float()
    rate = -ntk_slope(head_dim // 2, device=t.device) * 2.0 / ntk_alpha(t)
    return torch.where(t >= 1.0, rate, torch.zeros_like(rate))
