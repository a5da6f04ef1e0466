"""Benchmark one full training step of a CLEX model against the same model with plain RoPE.

What is timed: the whole step as training runs it, without a Lightning
Trainer: the curriculum draw (``module.curriculum.sample``), positions to the
device, ``causal_lm_nll`` forward (under ``clex_rope.use_scale(t)`` for CLEX),
``loss.backward()``, ``AdamW.step()`` and ``zero_grad(set_to_none=True)``.
Both modules share the LLaMA weights and the random batch, so only the RoPE
differs: CLEX adds the ODE solve (forward and adjoint) for t > 1, sampled
positions spread over ``L*t``, and two tiny extra parameters for AdamW.

How to read it: ``ratio all`` is median(CLEX) / median(plain) over every step;
t is uniform in 1..t_max and t = 1 skips the solve, so ``ratio t>1`` (CLEX
steps that actually integrate the ODE) is the honest worst case. The target
is <= 1.05x with ``--solver fast``; ``--solver rk4`` shows the reference
(torchdiffeq rk4 at dt 0.01). p10/p90 give the spread: if they are wide, the
machine was busy and the medians deserve a rerun.

``--ablate`` adds a third model in the same interleaving: CLEX whose solve is
replaced by a constant leaf tensor (requires grad), so it differs from plain
RoPE only by the gradient path through the rotary application and the sampled
positions; ``r leaf`` is its ratio to plain.

    python benchmarks/step_overhead.py [--configs tiny,hd128] [--solver fast|rk4]
        [--steps 40] [--warmup 5] [--device auto|cpu|cuda] [--ablate]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clexlab.models import LongContextLM
from clexlab.models.loss import causal_lm_nll

BASE_MODEL = {
    "name": "bench", "path": None, "tokenizer": "bytes", "rope_theta": 10000.0, "dtype": "float32",
    "gradient_checkpointing": False, "attn_implementation": "sdpa",
}
# name -> (model sizes, batch, max_scale). (a) is conf/model/tiny.yaml + conf/train.yaml.
CONFIGS = {
    "tiny": (dict(train_length=128, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                  intermediate_size=344), 32, 8),
    "hd128": (dict(train_length=128, hidden_size=256, num_layers=2, num_heads=2, num_kv_heads=2,
                   intermediate_size=688), 8, 16),
    # Opt-in: a wider model (head_dim 128, hidden 1024) to see the fixed overhead shrink with size.
    "wide": (dict(train_length=256, hidden_size=1024, num_layers=2, num_heads=8, num_kv_heads=8,
                  intermediate_size=2752), 4, 16),
}
OPTIM = {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "warmup_steps": 1, "min_lr_ratio": 0.1}
VOCAB = 257


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_pair(name: str, solver: str, device: torch.device):
    """Plain and CLEX modules with identical LLaMA weights, and an AdamW for each."""
    sizes, batch, max_scale = CONFIGS[name]
    model_cfg = {**BASE_MODEL, **sizes}
    clex_cfg = {"max_scale": max_scale, "param_factor": 1, "act": "tanh", "time_dt": 0.01,
                "lr": 1e-5, "log_scale": False, "solver": solver}
    torch.manual_seed(0)
    plain = LongContextLM(dict(model_cfg), "none", dict(clex_cfg), OPTIM, VOCAB)
    clex = LongContextLM(dict(model_cfg), "clex", dict(clex_cfg), OPTIM, VOCAB)
    # Copy the weights rather than trust the seed: only rotary_emb keys may differ.
    missing, unexpected = clex.model.load_state_dict(plain.model.state_dict(), strict=False)
    assert all(".rotary_emb." in k for k in missing + unexpected), (missing, unexpected)
    mods = []
    for module in (plain, clex):
        module.to(device).train()
        # One group for everything (no separate ODE lr): the solvers take fixed steps,
        # so the ODE weights' values do not change the cost being measured.
        opt = torch.optim.AdamW(module.parameters(), lr=OPTIM["lr"], betas=(0.9, 0.95), weight_decay=0.1)
        mods.append((module, opt))
    return mods, batch, sizes["train_length"], max_scale, sizes["hidden_size"] // sizes["num_heads"]


def solve_free(module: LongContextLM) -> LongContextLM:
    """The CLEX module with its solve replaced by a constant leaf (for ``--ablate``)."""
    rope = module.clex_rope
    leaf = (rope.log_inv_freq0.float() - 0.1).requires_grad_()
    rope.log_inv_freq = lambda t: leaf if t > 1 else rope.log_inv_freq0.float()
    return module


def train_step(module: LongContextLM, opt, ids: torch.Tensor, step: int, device: torch.device) -> tuple[float, int]:
    """One timed step; returns (seconds, t). ``labels = ids``: not a real target, but the same work."""
    _sync(device)
    start = time.perf_counter()
    draw = module.curriculum.sample(step, ids.shape[1])
    positions = draw.positions.to(device).unsqueeze(0).expand_as(ids)
    rope = module.clex_rope
    if rope is not None:
        with rope.use_scale(draw.t):
            nll, count = causal_lm_nll(module.model, ids, ids, positions)
    else:
        nll, count = causal_lm_nll(module.model, ids, ids, positions)
    loss = nll / count.clamp(min=1)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    return time.perf_counter() - start, draw.t


def _stats(xs: list[float]) -> tuple[float, float, float]:
    """Median, p10, p90 in ms."""
    ms = sorted(x * 1e3 for x in xs)
    if len(ms) < 2:
        return (ms[0], ms[0], ms[0]) if ms else (float("nan"),) * 3
    q = statistics.quantiles(ms, n=10, method="inclusive")
    return statistics.median(ms), q[0], q[-1]


def run_config(name: str, args, device: torch.device) -> dict:
    """Time ``args.steps`` interleaved steps of each model after ``args.warmup`` untimed ones."""
    mods, batch, length, max_scale, head_dim = build_pair(name, args.solver, device)
    order = [(mods[0], "plain"), (mods[1], "clex")]
    if args.ablate:
        leaf_mods, *_ = build_pair(name, args.solver, device)
        order.append(((solve_free(leaf_mods[1][0]), leaf_mods[1][1]), "leaf"))
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (batch, length), generator=gen).to(device)
    times: dict[str, list[float]] = {"plain": [], "clex": [], "clex_gt1": [], "leaf": []}
    for step in range(args.warmup + args.steps):
        # Interleave, alternating who goes first (ABBA...), so drift and cache effects hit both.
        for (module, opt), kind in order if step % 2 == 0 else order[::-1]:
            seconds, t = train_step(module, opt, ids, step, device)
            if step < args.warmup:
                continue
            times[kind].append(seconds)
            if kind == "clex" and t > 1:
                times["clex_gt1"].append(seconds)
    return {"name": name, "head_dim": head_dim, "shape": f"{batch}x{length}", "t_max": max_scale,
            "plain": _stats(times["plain"]), "clex": _stats(times["clex"]), "clex_gt1": _stats(times["clex_gt1"]),
            "leaf": _stats(times["leaf"]) if args.ablate else None, "n_gt1": len(times["clex_gt1"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,hd128", help=f"comma-separated, from {sorted(CONFIGS)}")
    parser.add_argument("--solver", choices=("fast", "rk4"), default="fast")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per model first")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--ablate", action="store_true", help="also time CLEX with its solve replaced by a constant")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for n in names:
        if n not in CONFIGS:
            parser.error(f"unknown config {n!r}; choose from {sorted(CONFIGS)}")
    # Threads are left at torch's default: that is what training uses (the fast
    # solver drops to one thread on CPU by itself for its tiny ops).
    print(f"torch {torch.__version__} | device {device} | intra-op threads {torch.get_num_threads()} | "
          f"steps {args.steps} (+{args.warmup} warm-up) per model, interleaved | ms: median [p10, p90]")
    head = (f"{'config':<7} {'hd':>3} {'BxL':>6} {'plain ms':>20} {'CLEX ms (all t)':>20} "
            f"{'CLEX ms (t>1)':>20} {'n>1':>4} {'r all':>6} {'r t>1':>6} solver")
    print(head)
    print("-" * len(head))
    fmt = lambda s: f"{s[0]:6.1f} [{s[1]:5.1f},{s[2]:6.1f}]"  # noqa: E731
    for name in names:
        r = run_config(name, args, device)
        print(f"{name:<7} {r['head_dim']:>3} {r['shape']:>6} {fmt(r['plain']):>20} {fmt(r['clex']):>20} "
              f"{fmt(r['clex_gt1']):>20} {r['n_gt1']:>4} {r['clex'][0] / r['plain'][0]:6.3f} "
              f"{r['clex_gt1'][0] / r['plain'][0]:6.3f} {args.solver} (t_max {r['t_max']})"
              + (f" | r leaf {r['leaf'][0] / r['plain'][0]:.3f}" if r["leaf"] else ""), flush=True)


if __name__ == "__main__":
    main()
