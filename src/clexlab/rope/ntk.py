"""NTK-aware RoPE frequencies as a function of the continuous scale t.

CLEX uses the NTK-aware schedule with ``alpha = 2t - 1`` both as a bias inside
the dynamics network and as the exact solution of the untrained ODE. Working
in log space makes the schedule linear in ``log alpha``:

    log theta_i(t) = -(2i/d) log(base) - (2i/(d-2)) log(alpha)

so its time derivative is ``-(2i/(d-2)) * 2/alpha``.
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


def ntk_log_inv_freq(t: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    """``log theta_ntk(t)``: NTK-aware log-frequencies with ``base' = base * alpha^(d/(d-2))``."""
    index = torch.arange(0, head_dim, 2, dtype=torch.float32, device=t.device)
    log_alpha = torch.log(ntk_alpha(t.float()))
    return -(index / head_dim) * math.log(base) - index / (head_dim - 2) * log_alpha


def ntk_log_inv_freq_rate(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``d/dt log theta_ntk(t)`` (zero below t = 1, where alpha is clamped)."""
    index = torch.arange(0, head_dim, 2, dtype=torch.float32, device=t.device)
    t = t.float()
    rate = -index / (head_dim - 2) * 2.0 / ntk_alpha(t)
    return torch.where(t >= 1.0, rate, torch.zeros_like(rate))
