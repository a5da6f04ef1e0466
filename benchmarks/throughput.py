"""Training throughput (tokens/s) and MFU of CLEX vs plain RoPE, measured side by side.

What is timed: full training steps as ``LongContextLM.training_step`` and
Lightning run them, without a Trainer: the curriculum draw, positions to the
device, ``causal_lm_nll`` forward (under ``use_scale(t)`` for CLEX, under
bf16 autocast with ``--dtype bf16``), ``loss.backward()``, gradient clipping
at 1.0 (conf/trainer/default.yaml), ``AdamW.step()`` and
``zero_grad(set_to_none=True)``. The model is a ``LlamaForCausalLM`` with
random weights built by ``clexlab.models.builder.build_model`` from a
conf/model/*.yaml file (shapes only; ``path`` is ignored). Both ropes are put
in with their methods' ``install`` (``clexlab.rope.methods``) as ``LongContextLM`` does, and the
benchmark swaps the model's rotary module between them, so plain and CLEX
share one set of weights and one optimizer (half the memory of two models):

* plain: transformers' default RoPE, contiguous positions 0..n-1;
* CLEX: the ODE rotary (``--solver``, fast by default), t and positions drawn
  by ``UniformScaleCurriculum(--max-scale)`` from ``(seed, step)`` (positions
  spread over n*t), the ODE weights in their own AdamW group.

Steps alternate plain/CLEX in ABBA order after ``--warmup`` untimed steps
each, so drift, clocks and caches hit both; figures are medians over
``--steps``. The ratio is CLEX tokens/s over plain tokens/s from the same run.

FLOPs (model FLOPs, counted the same for both methods, per token, fwd + bwd):

    6 * N  +  12 * n_layers * (n_heads * head_dim) * seq * c

* N: every parameter that multiplies each token: the transformer blocks and
  the LM head (counted even when tied), not the input embedding (a lookup) and
  not the CLEX ODE (a per-step cost, not per token). 6 = 2 (multiply-add)
  x 3 (forward, grad of inputs, grad of weights).
* attention (QK^T and AV): 4 * h * s per layer and token forward, x3 for
  backward; ``c = 1/2`` for causal attention (``--attn-flops causal``, the
  default: the masked half of the scores is not computed by the flash/SDPA
  kernels), ``c = 1`` with ``--attn-flops full`` (the PaLM convention, which
  gives a higher MFU for the same speed).
* Work that is recomputed is not useful work and is not counted: activation
  checkpointing (``--grad-ckpt``) and the chunked loss's logits recompute make
  the step slower and the MFU lower.

MFU = FLOPs/token x tokens/s / peak. Peak is dense bf16 tensor-core FLOP/s
looked up from ``torch.cuda.get_device_name`` (H100 SXM / H200 989, A100 312
TFLOP/s, ...), or ``--peak-tflops``. The table holds bf16 peaks only, so MFU is
n/a for fp32 and on CPU unless ``--peak-tflops`` is given.

On CUDA the clock is read after ``torch.cuda.synchronize()`` at both ends of
each step, and the peak memory is ``max_memory_allocated`` over the timed
steps of each method (reset before each step).

With ``--attn flash_attention_2`` and batch 1, transformers drops the
all-ones mask and takes CLEX's sampled (increasing, non-contiguous) positions
for a packed batch: it finds one sequence (positions start at 0 only once), so
the result is right, but the varlen path adds a host sync per layer that plain
RoPE does not pay.

    python benchmarks/throughput.py                       # tiny model on CPU, ~1 min
    python benchmarks/throughput.py --model llama1b --seq-len 4096 8192 --dtype bf16   # H100
        [--batch 1] [--attn sdpa|flash_attention_2|eager] [--grad-ckpt] [--steps 20] [--warmup 3]
        [--max-scale 16] [--solver fast|rk4] [--peak-tflops X] [--set key=value ...] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "conf" / "model"

# Dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name (first match wins).
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
)
SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
              "train_length", "rope_theta", "tie_word_embeddings")


class BenchError(Exception):
    """Bad input: printed as one line, exit status 2."""


def load_model_cfg(name: str, sets: list[str]) -> dict[str, Any]:
    """The ``model`` node of conf/model/<name>.yaml (or a .yaml path) with ``--set`` overrides."""
    import yaml

    path = Path(name) if name.endswith((".yaml", ".yml")) else MODEL_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))
        raise BenchError(f"no model config {path}; choose one of {known} or give a .yaml path")
    raw = yaml.safe_load(path.read_text()) or {}
    cfg = dict(raw["model"]) if isinstance(raw.get("model"), dict) else dict(raw)  # @package _global_ files
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or key not in SHAPE_KEYS:
            raise BenchError(f"--set {item!r}: expected key=value with key in {list(SHAPE_KEYS)}")
        cfg[key] = yaml.safe_load(value)
    missing = [k for k in SHAPE_KEYS[:5] if not isinstance(cfg.get(k), int) or cfg[k] < 1]
    if missing:
        raise BenchError(f"model config {path.name}: {missing} must be positive integers")
    if cfg["hidden_size"] % cfg["num_heads"] or cfg["num_heads"] % cfg["num_kv_heads"]:
        raise BenchError("hidden_size must be a multiple of num_heads, and num_heads of num_kv_heads")
    # Random weights from the shapes: the vocabulary of the byte tokenizer unless the file gives one.
    cfg["vocab_size"] = int(cfg.get("vocab_size") or (32000 if cfg.get("tokenizer") == "hf" else 257))
    cfg.update(path=None, dtype="float32")  # fp32 master weights; --dtype bf16 autocasts like bf16-mixed
    return cfg


def peak_tflops(device: torch.device, amp: torch.dtype | None, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s or None, where it came from)."""
    if override is not None:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    if amp is not torch.bfloat16:
        return None, f"{name}: table has bf16 peaks only (give --peak-tflops)"
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"{name} bf16 dense"
    return None, f"{name} not in the table (give --peak-tflops)"


def flops_per_token(model: torch.nn.Module, seq_len: int, causal: bool) -> tuple[float, int]:
    """Model FLOPs per trained token (fwd + bwd) and N, as in the module docstring."""
    n = sum(p.numel() for name, p in model.named_parameters(remove_duplicate=False)
            if not name.startswith("model.embed_tokens.") and ".rotary_emb." not in name)
    cfg = model.config
    attn_width = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    attention = 12 * cfg.num_hidden_layers * attn_width * seq_len * (0.5 if causal else 1.0)
    return 6.0 * n + attention, n


class Pair:
    """One model with two rotary modules (plain, CLEX), their curricula and one AdamW."""

    def __init__(self, model_cfg: dict[str, Any], seq_len: int, args, device: torch.device) -> None:
        from clexlab.curriculum import ContiguousPositions, UniformScaleCurriculum
        from clexlab.models.builder import build_model
        from clexlab.rope import find_rotary
        from clexlab.rope.methods import method_from_config

        cfg = {**model_cfg, "train_length": seq_len, "attn_implementation": args.attn,
               "gradient_checkpointing": args.grad_ckpt}
        clex_cfg = {"max_scale": args.max_scale, "param_factor": 1, "act": "tanh", "time_dt": 0.01,
                    "solver": args.solver, "log_scale": False, "freeze": False, "lr": 2e-5}
        torch.manual_seed(0)
        try:
            with torch.device(device):  # initialise on the device: a 1B model builds in seconds, not minutes
                self.model = build_model(cfg, cfg["vocab_size"])
        except ImportError as err:  # e.g. flash_attention_2 without the flash_attn package
            raise BenchError(f"--attn {args.attn}: {str(err).splitlines()[0]}") from err
        self.model.train()
        method_from_config("none").install(self.model, seq_len)
        self.plain_rotary = find_rotary(self.model)
        method_from_config("clex", {"clex": clex_cfg}).install(self.model, seq_len)
        self.clex_rotary = find_rotary(self.model)
        self.curricula = {"plain": ContiguousPositions(), "clex": UniformScaleCurriculum(args.max_scale, seed=0)}
        # The groups of LongContextLM.configure_optimizers: decay, no decay, the ODE at its own lr.
        groups: dict[str, list] = {"decay": [], "no_decay": [], "ode": []}
        for name, p in self.model.named_parameters():
            groups["ode" if ".rotary_emb." in name else "decay" if p.ndim >= 2 else "no_decay"].append(p)
        self.params = [p for ps in groups.values() for p in ps]
        self.opt = torch.optim.AdamW(
            [{"params": groups["decay"], "weight_decay": 0.1}, {"params": groups["no_decay"], "weight_decay": 0.0},
             {"params": groups["ode"], "weight_decay": 0.0, "lr": clex_cfg["lr"]}],
            lr=1e-4, betas=(0.9, 0.95),
        )

    def step(self, method: str, ids: torch.Tensor, step: int, amp: torch.dtype | None) -> tuple[float, int]:
        """One timed training step; returns (seconds, t)."""
        from clexlab.models.loss import causal_lm_nll

        device = ids.device
        clex = method == "clex"
        from clexlab.arch import architecture_of

        architecture_of(self.model).set_rotary(self.model, self.clex_rotary if clex else self.plain_rotary)
        _sync(device)
        start = time.perf_counter()
        draw = self.curricula[method].sample(step, ids.shape[1])
        positions = draw.positions.to(device).unsqueeze(0).expand_as(ids)
        autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        scale = self.clex_rotary.use_scale(draw.t) if clex else contextlib.nullcontext()
        with autocast, scale:
            nll, count = causal_lm_nll(self.model, ids, ids, positions)
            loss = nll / count.clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start, draw.t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stats(xs: list[float]) -> tuple[float, float, float]:
    """Median, p10, p90 of seconds."""
    xs = sorted(xs)
    if len(xs) < 2:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=10, method="inclusive")
    return statistics.median(xs), q[0], q[-1]


def run_seq_len(model_cfg: dict[str, Any], seq_len: int, args, device: torch.device, amp, peak) -> list[dict]:
    """Interleaved plain/CLEX steps at one sequence length; one result row per method."""
    pair = Pair(model_cfg, seq_len, args, device)
    fpt, n_params = flops_per_token(pair.model, seq_len, args.attn_flops == "causal")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model_cfg["vocab_size"], (args.batch, seq_len), generator=gen).to(device)
    times: dict[str, list[float]] = {"plain": [], "clex": []}
    peak_mem = {"plain": 0, "clex": 0}
    for step in range(args.warmup + args.steps):
        for method in ("plain", "clex") if step % 2 == 0 else ("clex", "plain"):  # ABBA
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, _ = pair.step(method, ids, step, amp)
            if step >= args.warmup:
                times[method].append(seconds)
                if device.type == "cuda":
                    peak_mem[method] = max(peak_mem[method], torch.cuda.max_memory_allocated(device))
    rows = []
    tokens = args.batch * seq_len
    for method in ("plain", "clex"):
        med, p10, p90 = _stats(times[method])
        tps = tokens / med
        rows.append({
            "method": method, "seq_len": seq_len, "batch": args.batch, "tokens_per_s": tps,
            "step_ms": [med * 1e3, p10 * 1e3, p90 * 1e3], "tflops": fpt * tps / 1e12,
            "mfu": fpt * tps / (peak * 1e12) if peak else None,
            "peak_mem_gib": peak_mem[method] / 2**30 if device.type == "cuda" else None,
            "flops_per_token": fpt, "n_params_nonembed": n_params,
        })
    rows[1]["ratio"] = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    rows[0]["ratio"] = 1.0
    return rows


def _row(r: dict) -> str:
    if r.get("oom"):
        return f"| {r['method']} | {r['seq_len']} | {r['batch']} | OOM | OOM | - | - | - | - |"
    ms = r["step_ms"]
    mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
    mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
    return (f"| {r['method']} | {r['seq_len']} | {r['batch']} | {r['tokens_per_s']:.0f} | "
            f"{ms[0]:.1f} [{ms[1]:.1f}, {ms[2]:.1f}] | {r['tflops']:.3g} | {mfu} | {mem} | {r['ratio']:.3f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="conf/model/<name>.yaml (tiny, llama1b, llama7b, ...) or a .yaml path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a model shape")
    parser.add_argument("--seq-len", type=int, nargs="+", default=None, help="default: 4 and 8 x the model's train_length")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 4 on CPU, 1 on CUDA)")
    parser.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                        help="bf16: autocast over fp32 weights (Lightning bf16-mixed); auto: bf16 on a bf16 GPU")
    parser.add_argument("--attn", choices=("sdpa", "flash_attention_2", "eager"), default="sdpa")
    parser.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=None,
                        help="activation checkpointing (default: the model config's gradient_checkpointing)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    parser.add_argument("--max-scale", type=int, default=16, help="CLEX t_max of the curriculum")
    parser.add_argument("--solver", choices=("fast", "rk4"), default="fast")
    parser.add_argument("--attn-flops", choices=("causal", "full"), default="causal")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak of the device, TFLOP/s")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _main(args)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is visible")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    model_cfg = load_model_cfg(args.model, args.set)
    if args.grad_ckpt is None:
        args.grad_ckpt = bool(model_cfg.get("gradient_checkpointing"))
    seq_lens = args.seq_len or [4 * model_cfg["train_length"], 8 * model_cfg["train_length"]]
    args.batch = args.batch if args.batch is not None else (1 if device.type == "cuda" else 4)
    for name, value, low in (("--seq-len", min(seq_lens), 2), ("--batch", args.batch, 1), ("--steps", args.steps, 1),
                             ("--warmup", args.warmup, 0), ("--max-scale", args.max_scale, 1)):
        if value < low:
            raise BenchError(f"{name} must be >= {low}, got {value}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise BenchError(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    if args.threads is not None:
        if args.threads < 1:
            raise BenchError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    amp = torch.bfloat16 if bf16 else None
    peak, peak_src = peak_tflops(device, amp, args.peak_tflops)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    m = model_cfg
    print(f"torch {torch.__version__} | device {dev_name} | model {m.get('name', args.model)}: hidden {m['hidden_size']}, "
          f"{m['num_layers']} layers, {m['num_heads']} heads ({m['num_kv_heads']} kv), mlp {m['intermediate_size']}, "
          f"vocab {m['vocab_size']}")
    print(f"{'bf16 autocast over fp32 weights' if amp else 'fp32'} | attn {args.attn} | grad ckpt {args.grad_ckpt} | "
          f"CLEX t_max {args.max_scale}, solver {args.solver} | steps {args.steps} (+{args.warmup} warm-up) per method, "
          f"interleaved | peak: {peak if peak else 'n/a'} ({peak_src})")
    rows: list[dict] = []
    header_done = False
    for seq_len in seq_lens:
        try:
            new = run_seq_len(model_cfg, seq_len, args, device, amp, peak)
        except torch.OutOfMemoryError:
            print(f"out of memory at seq len {seq_len}, batch {args.batch} (try --grad-ckpt or a smaller --batch)",
                  file=sys.stderr)
            new = [{"method": meth, "seq_len": seq_len, "batch": args.batch, "oom": True} for meth in ("plain", "clex")]
        # Out of the except block, the failed step's frames (and the model) are gone: give the memory back.
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not header_done:
            fpt = next((r["flops_per_token"] for r in new if not r.get("oom")), None)
            if fpt is not None:
                n = new[0]["n_params_nonembed"]
                print(f"FLOPs/token = 6*N + 12*layers*heads*head_dim*seq*{0.5 if args.attn_flops == 'causal' else 1} "
                      f"({args.attn_flops}), N = {n / 1e6:.2f} M (blocks + LM head, no input embedding)")
            print("| method | seq len | batch | tokens/s | step ms median [p10, p90] | TFLOP/s | MFU | peak GiB "
                  "| tok/s vs plain |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            header_done = True
        for r in new:
            print(_row(r), flush=True)
        rows.extend(new)
    ratios = [f"{r['seq_len']}: {r['ratio']:.3f}" for r in rows if r["method"] == "clex" and not r.get("oom")]
    print(f"CLEX/plain tokens/s ratio: {', '.join(ratios) or 'n/a'}")
    if args.json is not None:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        payload = {"device": dev_name, "torch": torch.__version__, "args": options, "model": model_cfg, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
