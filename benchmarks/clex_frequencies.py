"""Benchmark the CLEX frequency solve: reference (torchdiffeq rk4, dt 0.01) vs the fast path.

For head_dim 64 and 128 and t = 2, 8, 16 it prints the median forward and
backward time of both solvers, the fwd+bwd speed-up, the largest absolute
difference of the log-frequencies and the largest relative difference of the
weight gradients (``||g_fast - g_ref|| / ||g_ref||``, worst of up/down). Then
the time to build the full ``1..t_max`` eval table both ways.

    python benchmarks/clex_frequencies.py [--device cpu|cuda] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clexlab.rope.dynamics import CLEXDynamics
from clexlab.rope.fast_solver import frequency_table_fast, solve_log_inv_freq_fast
from clexlab.rope.ntk import rope_log_inv_freq
from clexlab.rope.solver import solve_log_inv_freq


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fwd_bwd(solve, dynamics, z0, times, cotangent, device):
    """One timed forward and backward; returns (fwd_s, bwd_s, values, grad_up, grad_down)."""
    dynamics.zero_grad(set_to_none=True)
    _sync(device)
    start = time.perf_counter()
    out = solve(dynamics, z0, times)
    _sync(device)
    mid = time.perf_counter()
    (out * cotangent).sum().backward()
    _sync(device)
    end = time.perf_counter()
    grads = (dynamics.up_proj.grad.detach().clone(), dynamics.down_proj.grad.detach().clone())
    return mid - start, end - mid, out.detach(), *grads


def _median_runs(solve, dynamics, z0, times, cotangent, device, repeats):
    _fwd_bwd(solve, dynamics, z0, times, cotangent, device)  # warm-up
    runs = [_fwd_bwd(solve, dynamics, z0, times, cotangent, device) for _ in range(repeats)]
    fwd = statistics.median(r[0] for r in runs)
    bwd = statistics.median(r[1] for r in runs)
    return fwd, bwd, runs[-1][2:]


def _timed(fn, device, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _rel(fast: torch.Tensor, ref: torch.Tensor) -> float:
    return ((fast - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the reference (fast: 10x)")
    parser.add_argument("--base", type=float, default=10000.0)
    parser.add_argument("--param-factor", type=int, default=1)
    parser.add_argument("--act", choices=("tanh", "silu"), default="tanh")
    parser.add_argument("--down-std", type=float, default=0.1, help="std of the random down_proj")
    parser.add_argument("--t-max", type=int, default=16, help="largest scale of the eval table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="intra-op CPU threads (default 1: both solvers are dispatch-bound, and on a shared "
        "CPU extra threads only add contention noise; 0 keeps torch's default)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ref_reps, fast_reps = max(1, args.repeats), max(1, 10 * args.repeats)
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"act={args.act} param_factor={args.param_factor} down_proj~N(0,{args.down_std}) "
        f"repeats ref={ref_reps} fast={fast_reps}; times in ms (median)"
    )
    header = (
        f"{'head':>4} {'t':>3} | {'ref fwd':>8} {'ref bwd':>8} | {'fast fwd':>8} {'fast bwd':>8} | "
        f"{'speed-up':>8} | {'max|dz|':>8} {'grad rel':>8}"
    )
    print(header)
    print("-" * len(header))
    tables = []
    for head_dim in (64, 128):
        torch.manual_seed(args.seed)
        dynamics = CLEXDynamics(head_dim, args.base, args.param_factor, args.act).to(device)
        with torch.no_grad():
            dynamics.down_proj.normal_(0.0, args.down_std)
        z0 = rope_log_inv_freq(head_dim, args.base).to(device)
        for t in (2, 8, 16):
            times = [1.0, float(t)]
            cotangent = torch.randn(2, head_dim // 2, device=device)
            r_fwd, r_bwd, (r_val, r_up, r_down) = _median_runs(
                solve_log_inv_freq, dynamics, z0, times, cotangent, device, ref_reps
            )
            f_fwd, f_bwd, (f_val, f_up, f_down) = _median_runs(
                solve_log_inv_freq_fast, dynamics, z0, times, cotangent, device, fast_reps
            )
            speed = (r_fwd + r_bwd) / (f_fwd + f_bwd)
            dz = (f_val - r_val).abs().max().item()
            grel = max(_rel(f_up, r_up), _rel(f_down, r_down))
            print(
                f"{head_dim:>4} {t:>3} | {r_fwd * 1e3:8.1f} {r_bwd * 1e3:8.1f} | {f_fwd * 1e3:8.2f} "
                f"{f_bwd * 1e3:8.2f} | {speed:7.0f}x | {dz:8.1e} {grel:8.1e}"
            )
        grid = torch.arange(1, args.t_max + 1, dtype=torch.float32)
        with torch.no_grad():
            r_time, r_table = _timed(lambda: solve_log_inv_freq(dynamics, z0, grid), device, ref_reps)
            f_time, f_table = _timed(
                lambda: frequency_table_fast(dynamics, z0, args.t_max), device, fast_reps
            )
        tables.append((head_dim, r_time, f_time, (f_table - r_table).abs().max().item()))
    print(f"\nEval table t = 1..{args.t_max} (no grad, one integration):")
    for head_dim, r_time, f_time, dz in tables:
        print(
            f"  head_dim {head_dim:>3}: ref {r_time * 1e3:7.1f} ms  fast {f_time * 1e3:6.2f} ms  "
            f"({r_time / f_time:.0f}x)  max|dz| {dz:.1e}"
        )


if __name__ == "__main__":
    main()
