"""Attention time and memory of the KV policies on one layer of LLaMA-7B attention, side by side with full attention.

One attention call as the model makes it (transformers' SDPA for ``full``,
``clexlab.evaluation.kv_policies``' registered attention for the policies),
32 query heads of 128 dims with 32 kv heads (LLaMA-2-7B) or 8 (GQA), at
context lengths 4k-64k, with the budgets of a 7B model with L = 4096:
StreamingLLM 4 sinks + 4092 recent, LM-Infinite 10 globals + 4096 recent
(distance cap 4096), TokenSelect 128 + 2048 + 512 (the released defaults).

* **decode**: one query at position n-1 over the cache as the chunked runner
  leaves it (StreamingLLM and LM-Infinite evicted down to their budget,
  TokenSelect and full holding all n keys; TokenSelect's fingerprints built).
  TokenSelect is timed selecting (a Selection Cache miss) and reusing (a hit).
* **decode sequence**: ``--steps`` consecutive decode steps, the cache growing
  by one key a step, TokenSelect with the Selection Cache at 0.9. The queries
  are synthetic: pre-RoPE Gaussian vectors following ``q_t = rho q_{t-1} +
  sqrt(1 - rho^2) eps_t``, so the cosine similarity of queries k steps apart is
  about ``rho^k``; real models' hit rates depend on the model and the text.
  The hit rate printed is the one measured.
* **prefill**: a chunk of 512 queries at the end of the context (positions
  n-512..n-1), full attention with the causal mask the model builds.
* **memory**: ``kv MiB``, the cached keys and values the policy holds (plus
  TokenSelect's fingerprints) at that context; ``peak MiB``, the largest
  amount of tensor memory allocated during the call and alive at once (on CPU
  counted by a TorchDispatchMode over every aten op; kernel-internal
  workspaces are not seen; on CUDA ``max_memory_allocated``).

    python benchmarks/kv_policies.py [--contexts 4096 16384 32768 65536] [--kv-heads 32 8]
        [--device cpu|cuda] [--repeats 3] [--prefill-repeats 2] [--steps 32] [--rho 0.95 0.99]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from clexlab.evaluation.kv_policies import make_policy
from clexlab.evaluation.kv_policies.attention import RUN_ATTRIBUTE, PolicyRun, kv_policy_attention
from clexlab.evaluation.kv_policies.rotation import Rotary

HEADS, HEAD_DIM, TRAIN_LENGTH, CHUNK = 32, 128, 4096, 512
INV_FREQ = 1.0 / 10000 ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM)  # LLaMA-2's RoPE
POLICIES = {
    "streaming": {"n_sink": 4, "n_local": TRAIN_LENGTH - 4},
    "lm_infinite": {"n_global": 10, "n_local": TRAIN_LENGTH, "max_distance": TRAIN_LENGTH},
    "tokenselect": {"n_init": 128, "n_local": 512, "top_k": 2048},
}
MiB = 2**20


class BenchRun(PolicyRun):
    """A policy run on one bare attention layer: LLaMA-2's frequencies instead of a model's."""

    def rotary(self, seq_len: int, device: torch.device) -> Rotary:
        return Rotary(INV_FREQ.to(device))


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the block and alive at once (CPU accounting)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.storages: dict[int, list[int]] = {}  # data_ptr -> [bytes, live tensors on it]

    def _release(self, ptr: int) -> None:
        entry = self.storages.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.live -= entry[0]
                del self.storages[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        aliases = any(r.alias_info is not None for r in func._schema.returns)
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            ptr = t.untyped_storage().data_ptr()
            # A fresh allocation, unless the output shares a live tracked storage (views, and ops
            # such as _unsafe_view that alias without saying so). Entries leave with their last tensor.
            if not aliases and ptr not in self.storages:
                self.storages[ptr] = [t.untyped_storage().nbytes(), 0]
                self.live += self.storages[ptr][0]
                self.peak = max(self.peak, self.live)
            if ptr in self.storages:  # views keep their storage alive too
                self.storages[ptr][1] += 1
                weakref.finalize(t, self._release, ptr)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after one warm-up call made by the caller)."""
    runs = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def peak_bytes(fn, device: torch.device) -> int:
    """Peak tensor memory allocated by one call of ``fn``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with PeakMemory() as tracker:
        fn()
    return tracker.peak


def attention_module(kv_heads: int) -> nn.Module:
    """What the attention functions read from an attention module: its index, groups and causality."""
    module = nn.Module()
    module.layer_idx, module.num_key_value_groups, module.is_causal = 0, HEADS // kv_heads, True
    return module


def heads(n: int, kv_heads: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    k = torch.randn(1, kv_heads, n, HEAD_DIM, generator=g, dtype=torch.float32).to(device, dtype)
    v = torch.randn(1, kv_heads, n, HEAD_DIM, generator=g, dtype=torch.float32).to(device, dtype)
    return k, v


def query(positions: torch.Tensor, q_pre: torch.Tensor) -> torch.Tensor:
    """Pre-RoPE queries ``[1, H, c, D]`` rotated at ``positions``, as the model hands them to attention."""
    return Rotary(INV_FREQ.to(q_pre.device)).rotate(q_pre, positions.to(q_pre.device))


class Case:
    """One policy at one context: the cache as the runner leaves it, and its attention call."""

    def __init__(self, name: str, threshold: float | None, kv_heads: int, k, v, past: int, device) -> None:
        self.name, self.device = name, device
        self.module = attention_module(kv_heads)
        self.scaling = HEAD_DIM**-0.5
        self.policy = None
        keys, values, positions = k[:, :, :past], v[:, :, :past], torch.arange(past, device=device)
        if name != "full":
            options = dict(POLICIES[name])
            if threshold is not None:
                options["similarity_threshold"] = threshold
            self.policy = make_policy(name, options)
            self.run = BenchRun(None, self.policy, "sdpa")
            setattr(self.module, RUN_ATTRIBUTE, self.run)
            keep = self.policy.needed(positions, past)
            if not bool(keep.all()):  # the chunked runner's eviction
                keys, values, positions = keys[:, :, keep], values[:, :, keep], positions[keep]
            self.run.key_positions[0] = positions
        self.keys, self.values = keys, values

    def kv_bytes(self) -> int:
        total = self.keys.nbytes + self.values.nbytes
        if self.policy is not None:
            fingerprints = self.run.states.get(0, {}).get("fingerprints")
            total += 0 if fingerprints is None else fingerprints.nbytes
        return total

    def call(self, q: torch.Tensor, new_k: torch.Tensor, new_v: torch.Tensor, mask: torch.Tensor | None):
        """The attention of queries ``q`` whose own keys are ``new_k`` (the cache's update is not timed)."""
        past = self.keys.shape[2]
        key, value = torch.cat([self.keys, new_k], dim=2), torch.cat([self.values, new_v], dim=2)
        n = (int(self.run.key_positions[0][-1]) + 1) if self.policy is not None and past else past
        position_ids = torch.arange(n, n + q.shape[2], device=q.device).unsqueeze(0)
        if self.policy is None:
            return lambda: sdpa_attention_forward(self.module, q, key, value, mask, scaling=self.scaling)

        def run():
            self.run.key_positions[0] = self.run.key_positions[0][:past]  # the cache before this call
            self.run.states.setdefault(0, {})["fingerprints_len"] = min(
                self.run.states.get(0, {}).get("fingerprints_len", 0), past)
            return kv_policy_attention(self.module, q, key, value, mask, scaling=self.scaling,
                                       position_ids=position_ids)

        return run


def ar_queries(steps: int, rho: float, device, dtype, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(1, HEADS, 1, HEAD_DIM, generator=g)
    out = []
    for _ in range(steps):
        out.append(q.to(device, dtype))
        q = rho * q + math.sqrt(1 - rho * rho) * torch.randn(1, HEADS, 1, HEAD_DIM, generator=g)
    return out


def interleaved(fns: dict, device: torch.device, repeats: int) -> dict:
    """Median seconds per call of every function, timed in turns so that load changes hit them alike."""
    runs = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            runs[name].append(timed(fn, device, 1))
    return {name: statistics.median(r) for name, r in runs.items()}


VARIANTS = [("full", None), ("streaming", None), ("lm_infinite", None), ("tokenselect", 2.0), ("tokenselect", -2.0)]


def bench_context(n: int, kv_heads: int, args, device, dtype) -> dict:
    k, v = heads(n + args.steps, kv_heads, dtype, device)
    g = torch.Generator(device="cpu").manual_seed(2)
    q_one = query(torch.tensor([n - 1]), torch.randn(1, HEADS, 1, HEAD_DIM, generator=g).to(device, dtype))
    q_chunk = query(torch.arange(n - CHUNK, n), torch.randn(1, HEADS, CHUNK, HEAD_DIM, generator=g).to(device, dtype))
    causal = (torch.arange(n, device=device)[None, :] <= torch.arange(n - CHUNK, n, device=device)[:, None])[None, None]
    rows: dict = {}
    labels = {(name, t): name if t is None else f"{name} {'select' if t > 1 else 'reuse'}" for name, t in VARIANTS}
    # decode: the past n-1 keys cached, the new key at n-1. TokenSelect "select" never reuses a
    # selection (threshold 2), "reuse" always does (threshold -2) after its first, untimed, call.
    cases, fns = {}, {}
    for name, threshold in VARIANTS:
        label = labels[(name, threshold)]
        cases[label] = Case(name, threshold, kv_heads, k, v, n - 1, device)
        fns[label] = cases[label].call(q_one, k[:, :, n - 1 : n], v[:, :, n - 1 : n], None)
        fns[label]()  # warm-up; TokenSelect builds its fingerprints and makes its first selection
        rows[label] = {"decode_peak": peak_bytes(fns[label], device), "kv": cases[label].kv_bytes()}
    for label, seconds in interleaved(fns, device, args.repeats).items():
        rows[label]["decode_ms"] = seconds * 1e3
    del cases, fns
    # prefill: the past n-512 keys cached, a chunk of 512 queries (a chunk selects afresh)
    cases, fns = {}, {}
    for name, threshold in VARIANTS[:4]:
        label = labels[(name, threshold)]
        cases[label] = Case(name, threshold, kv_heads, k, v, n - CHUNK, device)
        fns[label] = cases[label].call(q_chunk, k[:, :, n - CHUNK : n], v[:, :, n - CHUNK : n], causal)
        fns[label]()  # warm-up; TokenSelect builds the fingerprints of the past (not a per-chunk cost)
        rows[label]["prefill_peak"] = peak_bytes(fns[label], device)
    for label, seconds in interleaved(fns, device, args.prefill_repeats).items():
        rows[label]["prefill_ms"] = seconds * 1e3
    del cases, fns
    rows["sequences"] = {rho: decode_sequence(n, kv_heads, k, v, rho, args, device, dtype) for rho in args.rho}
    return rows


def decode_sequence(n: int, kv_heads: int, k, v, rho: float, args, device, dtype) -> dict:
    """``args.steps`` decode steps from position n-1, full vs TokenSelect with the Selection Cache at 0.9."""
    queries = ar_queries(args.steps + 1, rho, device, dtype)
    module = attention_module(kv_heads)
    scaling = HEAD_DIM**-0.5
    policy = make_policy("tokenselect", POLICIES["tokenselect"])
    run = BenchRun(None, policy, "sdpa")
    setattr(module, RUN_ATTRIBUTE, run)
    run.key_positions[0] = torch.arange(n - 2, device=device)
    # Step 0 (position n-2) builds the fingerprints and the first selection; not timed.
    first = query(torch.tensor([n - 2]), queries[0])
    kv_policy_attention(module, first, k[:, :, : n - 1], v[:, :, : n - 1], None, scaling=scaling,
                        position_ids=torch.tensor([[n - 2]]))
    before = dict(run.stats)
    full_t, select_t = [], []
    for step in range(args.steps):
        pos = n - 1 + step
        q = query(torch.tensor([pos]), queries[step + 1])
        key, value = k[:, :, : pos + 1], v[:, :, : pos + 1]
        sync(device)
        start = time.perf_counter()
        sdpa_attention_forward(module, q, key, value, None, scaling=scaling)
        sync(device)
        mid = time.perf_counter()
        kv_policy_attention(module, q, key, value, None, scaling=scaling, position_ids=torch.tensor([[pos]]))
        sync(device)
        full_t.append(mid - start)
        select_t.append(time.perf_counter() - mid)
    reused = run.stats.get("reused", 0) - before.get("reused", 0)
    selected = run.stats.get("selected", 0) - before.get("selected", 0)
    return {"full_ms": statistics.mean(full_t) * 1e3, "tokenselect_ms": statistics.mean(select_t) * 1e3,
            "hit_rate": reused / max(reused + selected, 1)}


def ratio(full_ms: float, ms: float, label: str) -> str:
    """`` (4.2x)``: how many times faster than full attention (nothing for full itself)."""
    return "" if label == "full" else f" ({full_ms / ms:.1f}x)"


def report(results: dict, args, device, dtype) -> None:
    print(f"torch {torch.__version__} | device {device} | dtype {str(dtype).split('.')[-1]}"
          f" | threads {torch.get_num_threads()} | {HEADS} query heads x {HEAD_DIM}, L = {TRAIN_LENGTH}"
          f" | repeats: decode {args.repeats}, prefill {args.prefill_repeats}")
    for kv_heads, by_n in results.items():
        print(f"\n### {HEADS} query heads, {kv_heads} kv heads\n")
        labels = [lab for lab in next(iter(by_n.values())) if lab != "sequences"]  # in VARIANTS order
        print("decode step, ms (x full)")
        print("| context | " + " | ".join(labels) + " |")
        print("|---:|" + "---:|" * len(labels))
        for n, rows in by_n.items():
            full = rows["full"]["decode_ms"]
            cells = [f"{rows[lab]['decode_ms']:.2f}" + ratio(full, rows[lab]["decode_ms"], lab) for lab in labels]
            print(f"| {n} | " + " | ".join(cells) + " |")
        prefill = [lab for lab in labels if "prefill_ms" in next(iter(by_n.values()))[lab]]
        print(f"\nprefill chunk of {CHUNK} queries, ms (x full)")
        print("| context | " + " | ".join(prefill) + " |")
        print("|---:|" + "---:|" * len(prefill))
        for n, rows in by_n.items():
            full = rows["full"]["prefill_ms"]
            cells = [f"{rows[lab]['prefill_ms']:.0f}" + ratio(full, rows[lab]["prefill_ms"], lab) for lab in prefill]
            print(f"| {n} | " + " | ".join(cells) + " |")
        print("\nmemory, MiB: kv held / peak during a decode step / peak during a prefill chunk")
        print("| context | " + " | ".join(prefill) + " |")
        print("|---:|" + "---:|" * len(prefill))
        for n, rows in by_n.items():
            cells = [f"{rows[lab]['kv'] / MiB:.0f} / {rows[lab]['decode_peak'] / MiB:.1f}"
                     f" / {rows[lab]['prefill_peak'] / MiB:.0f}" for lab in prefill]
            print(f"| {n} | " + " | ".join(cells) + " |")
        print(f"\ndecode sequence: {args.steps} steps, TokenSelect Selection Cache at 0.9, AR(1) queries (rho)")
        print("| context | rho | hit rate | full ms/step | tokenselect ms/step | x full |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n, rows in by_n.items():
            for rho, s in rows["sequences"].items():
                print(f"| {n} | {rho} | {s['hit_rate']:.2f} | {s['full_ms']:.2f} | {s['tokenselect_ms']:.2f} | "
                      f"{s['full_ms'] / s['tokenselect_ms']:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    parser.add_argument("--kv-heads", type=int, nargs="+", default=[32, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prefill-repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rho", type=float, nargs="+", default=[0.95, 0.99])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    torch.set_grad_enabled(False)
    results = {}
    for kv_heads in args.kv_heads:
        results[kv_heads] = {}
        for n in args.contexts:
            start = time.perf_counter()
            results[kv_heads][n] = bench_context(n, kv_heads, args, device, dtype)
            print(f"  measured {kv_heads} kv heads at {n} in {time.perf_counter() - start:.0f} s", flush=True)
    report(results, args, device, dtype)


if __name__ == "__main__":
    main()
