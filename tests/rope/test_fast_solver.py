"""The fast CLEX solve against the reference (torchdiffeq rk4, time_dt 0.01).

The float32 reference carries its own round-off: ~1500 steps at t = 16 drift
by ~3e-5 to ~1.5e-4 from the converged solution, growing with |z|. The
reference-matching cases use weights that keep that drift under ~5e-5, so the
1e-4 tolerance measures the fast path and not the reference's noise; strong
weights are checked against the same rk4 run in float64 instead.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchdiffeq import odeint

from clexlab.rope import fast_solver
from clexlab.rope.dynamics import CLEXDynamics
from clexlab.rope.fast_solver import frequency_table_fast, solve_log_inv_freq_fast
from clexlab.rope.ntk import ntk_log_inv_freq, rope_log_inv_freq
from clexlab.rope.solver import solve_log_inv_freq

BASE = 10000.0


@pytest.fixture(autouse=True)
def _one_thread():
    """Every op here is tiny: intra-op threads only add contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dynamics(head_dim, param_factor, act, down_std, seed=0):
    torch.manual_seed(seed)
    dynamics = CLEXDynamics(head_dim, BASE, param_factor, act)
    with torch.no_grad():
        dynamics.down_proj.normal_(0.0, down_std)
    return dynamics


def _values_and_grads(solve, dynamics, times, cotangent):
    dynamics.zero_grad(set_to_none=True)
    out = solve(dynamics, rope_log_inv_freq(dynamics.head_dim, BASE), times)
    (out * cotangent).sum().backward()
    return out.detach(), dynamics.up_proj.grad.clone(), dynamics.down_proj.grad.clone()


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def _ntk64(t, head_dim):
    """log theta_ntk(t) in float64 (independent of the module's helper)."""
    index = torch.arange(0, head_dim, 2, dtype=torch.float64)
    log_alpha = torch.log(torch.clamp(torch.as_tensor(2.0 * t - 1.0, dtype=torch.float64), min=1.0))
    return -(index / head_dim) * math.log(BASE) - index / (head_dim - 2) * log_alpha


def _act(name):
    return torch.tanh if name == "tanh" else F.silu


def _replica(dynamics, z0, times, max_step):
    """The fast path's scheme written plainly in float64, differentiated by autograd."""
    w_up, w_down = dynamics.up_proj.float().double(), dynamics.down_proj.float().double()
    act, d = _act(dynamics.act_name), dynamics.head_dim

    def field(t, w):
        return act((w + 2.0 * _ntk64(t, d)) @ w_up) @ w_down

    lipschitz = (
        fast_solver.spectral_norm_bound(dynamics.up_proj)
        * fast_solver.spectral_norm_bound(dynamics.down_proj)
        * fast_solver._ACT_SLOPE[dynamics.act_name]
    )
    w, outs = z0.double() - _ntk64(times[0], d), [z0.double()]
    for t0, t1 in zip(times[:-1], times[1:]):
        start = t0
        for h in fast_solver.step_sizes(t0, t1, max_step, lipschitz):
            ks = []
            for a_row, c in zip(fast_solver._A, fast_solver._C):
                y = w + h * sum((a * k for a, k in zip(a_row, ks)), torch.zeros_like(w))
                ks.append(field(start + c * h, y))
            w = w + h * sum(b * k for b, k in zip(fast_solver._B, ks))
            start += h
        outs.append(w + _ntk64(t1, d))
    return torch.stack(outs)


# Weights whose reference round-off stays below ~5e-5 up to t = 16 (see module docstring).
CASES = [(64, 1, "tanh", 0.1), (128, 2, "tanh", 0.05), (64, 2, "silu", 0.03), (128, 1, "silu", 0.03)]


@pytest.mark.parametrize("t", [2.0, 8.0, 16.0])
@pytest.mark.parametrize("head_dim,param_factor,act,down_std", CASES)
def test_matches_reference(head_dim, param_factor, act, down_std, t):
    dynamics = _dynamics(head_dim, param_factor, act, down_std)
    cotangent = torch.randn(2, head_dim // 2)
    ref = _values_and_grads(solve_log_inv_freq, dynamics, [1.0, t], cotangent)
    fast = _values_and_grads(solve_log_inv_freq_fast, dynamics, [1.0, t], cotangent)
    assert fast[0].dtype == torch.float32 and fast[0].shape == (2, head_dim // 2)
    assert torch.equal(fast[0][0], rope_log_inv_freq(head_dim, BASE))
    assert (fast[0] - ref[0]).abs().max().item() < 1e-4
    assert _rel(fast[1], ref[1]) < 1e-3 and _rel(fast[2], ref[2]) < 1e-3


def test_strong_weights_match_float64_rk4():
    """down_proj ~ N(0, 0.2): deviations of ~60 by t = 16, against rk4 dt 0.01 in float64."""
    dynamics = _dynamics(128, 1, "tanh", 0.2)
    d, cotangent = 128, torch.randn(2, 64)
    slope = -torch.arange(0, d, 2, dtype=torch.float64) / (d - 2)

    def rk4_f64(dyn, z0, times):
        w_up, w_down = dyn.up_proj.double(), dyn.down_proj.double()

        def field(t, z):  # the CLEX field with every term in float64
            return torch.tanh((z + _ntk64(t, d)) @ w_up) @ w_down + slope * 2.0 / (2.0 * t - 1.0)

        grid = torch.tensor(times, dtype=torch.float64)
        return odeint(field, z0.double(), grid, method="rk4", options={"step_size": 0.01})

    ref = _values_and_grads(rk4_f64, dynamics, [1.0, 16.0], cotangent)
    fast = _values_and_grads(solve_log_inv_freq_fast, dynamics, [1.0, 16.0], cotangent)
    assert (fast[0].double() - ref[0]).abs().max().item() < 2e-5
    assert _rel(fast[1].double(), ref[1]) < 1e-5 and _rel(fast[2].double(), ref[2]) < 1e-5


def test_table_matches_reference_and_single_solves():
    dynamics = _dynamics(64, 1, "tanh", 0.1)
    z0 = rope_log_inv_freq(64, BASE)
    with torch.no_grad():
        ref = solve_log_inv_freq(dynamics, z0, torch.arange(1, 17, dtype=torch.float32))
        table = frequency_table_fast(dynamics, z0, 16)
        singles = [solve_log_inv_freq_fast(dynamics, z0, [1.0, float(t)])[-1] for t in range(2, 17)]
    assert table.shape == (16, 32) and torch.equal(table[0], z0)
    assert (table - ref).abs().max().item() < 1e-4
    # Different grids (the table steps through every integer): both within ~2e-6 of the solution.
    torch.testing.assert_close(table[1:], torch.stack(singles), rtol=0, atol=1e-5)


def test_untrained_equals_ntk_schedule():
    dynamics = CLEXDynamics(128, BASE, 2, "tanh")  # down_proj starts at zero
    times = torch.tensor([1.0, 1.5, 2.0, 3.7, 8.0, 16.0])
    out = solve_log_inv_freq_fast(dynamics, rope_log_inv_freq(128, BASE), times)
    expected = torch.stack([ntk_log_inv_freq(t, 128, BASE) for t in times])
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    out[-1].sum().backward()  # W_down = 0: no W_up gradient, but a W_down one
    assert dynamics.up_proj.grad.abs().max() == 0 and dynamics.down_proj.grad.abs().max() > 0


@pytest.mark.parametrize("act", ["tanh", "silu"])
def test_adjoint_is_exact_for_the_discrete_scheme(act):
    """Non-integer, unequal intervals; gradients for the weights and z0."""
    dynamics, times = _dynamics(64, 2, act, 0.2), [1.0, 2.5, 4.2]
    z0 = rope_log_inv_freq(64, BASE).requires_grad_()
    cotangent = torch.randn(3, 32, dtype=torch.float64)
    fast = solve_log_inv_freq_fast(dynamics, z0, times)
    grads = torch.autograd.grad((fast * cotangent).sum(), (z0, dynamics.up_proj, dynamics.down_proj))
    replica = _replica(dynamics, z0, times, fast_solver.MAX_STEP)
    expected = torch.autograd.grad((replica * cotangent).sum(), (z0, dynamics.up_proj, dynamics.down_proj))
    torch.testing.assert_close(fast.double(), replica, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, expected):
        assert got.dtype == torch.float32 and _rel(got.double(), want.double()) < 1e-6


def test_tableau_is_sixth_order():
    dynamics, z0 = _dynamics(64, 1, "silu", 0.2), rope_log_inv_freq(64, BASE)
    with torch.no_grad():
        # Steps below GRADE (1/3) and 1/Lip: uniform grids, so halving h must cut the error ~64x.
        exact = _replica(dynamics, z0, [1.0, 3.0], 1 / 64)
        errors = [(_replica(dynamics, z0, [1.0, 3.0], h) - exact).abs().max().item() for h in (1 / 4, 1 / 8)]
    assert errors[0] / errors[1] > 40  # 2**6 = 64 asymptotically


def test_low_precision_weights_and_inference_mode():
    dynamics = _dynamics(64, 1, "tanh", 0.1).to(torch.bfloat16)
    as_float = _dynamics(64, 1, "tanh", 0.1)
    as_float.load_state_dict({k: v.float() for k, v in dynamics.state_dict().items()})
    z0 = rope_log_inv_freq(64, BASE)
    out = solve_log_inv_freq_fast(dynamics, z0, [1.0, 4.0])
    assert torch.equal(out, solve_log_inv_freq_fast(as_float, z0, [1.0, 4.0]))
    out[-1].sum().backward()
    assert dynamics.up_proj.grad.dtype == torch.bfloat16 and dynamics.down_proj.grad.dtype == torch.bfloat16
    with torch.inference_mode():
        table = frequency_table_fast(as_float, z0, 4)
    assert torch.equal(table[-1], solve_log_inv_freq_fast(as_float, z0, [1.0, 2.0, 3.0, 4.0])[-1].detach())


@pytest.mark.parametrize("times", [[0.5, 2.0], [1.0, 3.0, 2.0], [1.0, 1.0], []])
def test_rejects_bad_times(times):
    with pytest.raises(ValueError):
        solve_log_inv_freq_fast(CLEXDynamics(64, BASE), rope_log_inv_freq(64, BASE), times)


@pytest.mark.parametrize("lipschitz", [0.0, 1.0, 3.7])
@pytest.mark.parametrize("t0,t1", [(1.0, 16.0), (1.0, 2.0), (3.0, 4.0), (1.0, 1.2)])
def test_step_sizes_follow_the_profile(t0, t1, lipschitz):
    steps = fast_solver.step_sizes(t0, t1, fast_solver.MAX_STEP, lipschitz)
    assert math.isclose(t0 + sum(steps), t1, abs_tol=1e-12) and all(h > 0 for h in steps)
    cap = fast_solver.MAX_STEP if lipschitz == 0 else min(fast_solver.MAX_STEP, 1 / lipschitz)
    start = t0
    for h in steps:
        # Never above the profile at the step's start by more than the rounding up allows.
        assert h <= min(fast_solver.GRADE * (2 * (start + h) - 1), cap) + 1e-12
        start += h
    if (t0, t1, lipschitz) == (1.0, 16.0, 0.0):
        assert len(steps) == 21  # 45 with the uniform 1/3 grid it replaced


def test_spectral_norm_bound_is_a_tight_upper_bound():
    torch.manual_seed(0)
    for shape in [(16, 32), (64, 128), (256, 64)]:
        w = torch.randn(*shape) * 0.3
        exact = torch.linalg.matrix_norm(w.double(), 2).item()
        assert exact <= fast_solver.spectral_norm_bound(w) <= 1.15 * exact
