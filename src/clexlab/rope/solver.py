"""Integrate the CLEX ODE from t = 1.

The reference path is torchdiffeq's fixed-step ``rk4`` with step ``time_dt``,
exactly as in the paper, with gradients flowing through every solver step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchdiffeq import odeint

from clexlab.rope.dynamics import CLEXDynamics

#: torchdiffeq methods; ``rk4`` at ``time_dt`` 0.01 is the paper's reference.
TORCHDIFFEQ_METHODS = ("rk4", "euler", "midpoint", "dopri5")
#: What ``clex.solver`` accepts: the fast path (clexlab.rope.fast_solver) or a torchdiffeq method.
SOLVERS = ("fast", *TORCHDIFFEQ_METHODS)


def solve_log_inv_freq(
    dynamics: CLEXDynamics,
    z0: torch.Tensor,
    times: Sequence[float] | torch.Tensor,
    time_dt: float = 0.01,
    method: str = "rk4",
) -> torch.Tensor:
    """Log-frequencies ``z(t)`` at each of ``times`` (which must start at 1.0).

    Args:
        dynamics: the vector field.
        z0: ``log inv_freq`` at t = 1, shape ``[d/2]``.
        times: increasing times, the first being 1.0.
        time_dt: step size of the fixed-step methods.
        method: a torchdiffeq method name (``rk4`` is the paper's).

    Returns:
        Tensor ``[len(times), d/2]`` in float32; row 0 equals ``z0``.
    """
    if method not in TORCHDIFFEQ_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; choose one of {TORCHDIFFEQ_METHODS}")
    grid = torch.as_tensor(times, dtype=torch.float32, device=z0.device)
    if grid.numel() == 1:
        return z0.float().unsqueeze(0)
    options = {"step_size": time_dt} if method != "dopri5" else None
    kwargs = {"rtol": 1e-7, "atol": 1e-9} if method == "dopri5" else {}
    # The solve runs in float32 even under bf16 autocast: frequencies near
    # 1e-4 lose all precision in bf16 and positions up to 64k amplify the error.
    device_type = z0.device.type if z0.device.type in ("cuda", "cpu") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        return odeint(dynamics, z0.float(), grid, method=method, options=options, **kwargs)
