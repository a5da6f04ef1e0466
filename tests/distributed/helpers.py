"""Test-only pieces for the multi-process tests: a per-rank recorder and the shared command lines.

``StepRecorder`` is added to a real ``train.py`` run with
``+callbacks.record._target_=tests.distributed.helpers.StepRecorder``. Every
rank appends one JSON line per training batch (its rank, the step, the
curriculum's scale t and a checksum of the positions) and one at the end of
training (what it holds: sharded or not, dtypes, a checksum of the CLEX ODE)
to ``$CLEXLAB_TEST_RECORD_DIR/<pid>.jsonl``, so a test can compare the ranks.
Each batch record also says what the forward really computed with: the dtypes
(and DTensor-ness) of the weights the linear layers saw, and the bytes of the
float32 -> low-precision copies made of gathered (unsharded) parameters, i.e.
autocast's weight cache; and the squared norms of the gradients the optimizer
was about to step with (after the ranks' averaging, before clipping), this
rank's share of the sharded ones apart from the whole (replicated) ones.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from tests.conftest import ROOT

RECORD = "+callbacks.record._target_=tests.distributed.helpers.StepRecorder"
# Two processes on a 2-core machine: one thread each, or they fight over the cores.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CLEXLAB_DEBUG": "1"}


def tiny_args() -> list[str]:
    """A tiny model, a few steps, a CLEX ODE that moves (lr 1e-2) and short evaluations."""
    return [
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "data.val_max_windows=4",
        "callbacks.long_context_eval.multiples=[1,2,4]",
        "callbacks.long_context_eval.max_tokens=256",
        "eval.multiples=[1,2,4]",
        "eval.max_tokens=256",
        "model.train_length=32",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "clex.max_scale=4",
        "clex.lr=1.0e-2",
        "optim.lr=3.0e-3",
        "optim.warmup_steps=1",
        "logger=csv",
        RECORD,
    ]


class GatheredWeightCasts(TorchDispatchMode):
    """Bytes of the float32 -> bf16/fp16 copies made of plain (gathered, not DTensor) parameters.

    Under autocast over float32 weights these are its cached weight casts. FSDP2's
    own cast of the sharded float32 parameters before a bf16 all-gather works on
    the shards (DTensors' local tensors) and is not counted; nor is the
    replicated CLEX ODE (the solver's casts are its own).
    """

    def __init__(self, model: nn.Module, skip: set[int]) -> None:
        super().__init__()
        self.model, self.skip = model, skip
        self.casts: dict[int, int] = {}

    def gathered(self) -> set[int]:
        """Storages of the plain (gathered or replicated) parameters, the ODE left out."""
        from clexlab.models.sharding import is_dtensor

        return {
            p.untyped_storage().data_ptr()
            for p in self.model.parameters()
            if not is_dtensor(p) and id(p) not in self.skip
        }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (
            func is torch.ops.aten._to_copy.default
            and args[0].dtype == torch.float32
            and out.dtype in (torch.bfloat16, torch.float16)
            and args[0].untyped_storage().data_ptr() in self.gathered()
        ):
            self.casts[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
        return out


class StepRecorder(L.Callback):
    """Append what this rank saw at each training batch and at the end of training."""

    def on_train_start(self, trainer, pl_module) -> None:
        rope = pl_module.rope_parameters()
        self._write(trainer, {
            "event": "start",
            "rope_sum": float(sum(p.detach().double().sum() for p in rope)) if rope else None,
        })
        self._grads = None
        self._record_gradients_before_clipping(pl_module)

    def _record_gradients_before_clipping(self, pl_module) -> None:
        """Wrap the module's ``configure_gradient_clipping``, the hook Lightning calls after the module's
        ``on_before_optimizer_step`` (where clexlab averages the replicated ODE's gradients) and before
        clipping: the gradients there are exactly what the ranks agreed on. Clipping and AdamW would
        hide a constant factor such as a lost average over ranks."""
        original = pl_module.configure_gradient_clipping

        def configure_gradient_clipping(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            self._grads = gradient_norms(pl_module)
            return original(optimizer, gradient_clip_val, gradient_clip_algorithm)

        pl_module.configure_gradient_clipping = configure_gradient_clipping

    def _write(self, trainer: L.Trainer, record: dict) -> None:
        out = Path(os.environ["CLEXLAB_TEST_RECORD_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "output_dir": str(trainer.default_root_dir),
            **record,
        }
        with open(out / f"{os.getpid()}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        from clexlab.models.sharding import is_dtensor

        self._step = trainer.global_step  # the optimizer step this batch belongs to
        # Watch the forward (until on_before_backward): the weights each linear layer computes with ...
        self._linear = set()
        self._hooks = [
            m.register_forward_pre_hook(lambda m, args: self._linear.add((str(m.weight.dtype), is_dtensor(m.weight))))
            for m in pl_module.model.modules()
            if isinstance(m, nn.Linear)
        ]
        # ... and the low-precision copies made of them (autocast's cache).
        self._casts = GatheredWeightCasts(pl_module.model, {id(p) for p in pl_module.rope_parameters()})
        self._casts.__enter__()

    def _stop_watching(self) -> None:
        if getattr(self, "_casts", None) is not None:
            self._casts.__exit__(None, None, None)
            self._cast_bytes = sum(self._casts.casts.values())
            self._casts = None
            for hook in self._hooks:
                hook.remove()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._stop_watching()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_watching()
        grads, self._grads = self._grads, None
        draw = pl_module.last_draw
        self._write(trainer, {
            "event": "batch",
            "step": self._step,
            "batch_idx": batch_idx,
            "t": float(draw.t),  # continuous curricula draw a real t
            "positions": int((draw.positions * torch.arange(1, draw.positions.numel() + 1)).sum()),
            "first_id": int(batch["input_ids"][0, 0]),
            "linear_weights": sorted(f"{dtype}{' DTensor' if dt else ''}" for dtype, dt in self._linear),
            "weight_cast_bytes": self._cast_bytes,
            "grads": grads,  # None on a micro-batch without an optimizer step
        })

    def on_train_end(self, trainer, pl_module) -> None:
        from clexlab.models.sharding import is_dtensor, local_part

        params = dict(pl_module.model.named_parameters())
        layer = next(p for name, p in params.items() if ".layers.0." in name and p.ndim == 2)
        rope = pl_module.rope_parameters()
        self._write(trainer, {
            "event": "end",
            "layer_sharded": is_dtensor(layer),
            "layer_local_numel": local_part(layer).numel(),
            "layer_numel": layer.numel(),
            "dtypes": sorted({str(p.dtype) for p in params.values()}),
            "rope_sharded": any(is_dtensor(p) for p in rope),
            "rope_sum": float(sum(p.detach().double().sum() for p in rope)) if rope else None,
            "rope_abs": float(sum(p.detach().double().abs().sum() for p in rope)) if rope else None,
        })


def gradient_norms(pl_module) -> dict[str, float]:
    """Squared gradient norms: ``sharded`` (this rank's shards), ``plain`` (whole tensors), ``ode`` (the CLEX ODE)."""
    from clexlab.models.sharding import is_dtensor, local_part

    ode = {id(p) for p in pl_module.rope_parameters()}
    out = {"sharded": 0.0, "plain": 0.0, "ode": 0.0}
    for p in pl_module.parameters():
        if p.grad is not None:
            key = "ode" if id(p) in ode else "sharded" if is_dtensor(p.grad) else "plain"
            out[key] += float(local_part(p.grad).detach().double().pow(2).sum())
    return out


def read_records(directory: Path) -> list[dict]:
    """Every record of every process under ``directory``."""
    records = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def run_ranks(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python <args>`` from the repository root, like ``tests.conftest.run_cli``, for multi-process runs.

    The command runs in a session of its own, and that session's process group
    is killed when it returns or times out: a rank left behind by a failed or
    hung run (Lightning starts ranks 1..N-1 as children) must not outlive the test.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **ENV, **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"python {' '.join(args[:3])} ... did not finish in {timeout} s (a hang?)\n{err[-3000:]}")
    finally:
        _kill_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(session: int) -> None:
    """SIGKILL every process still in the session the test started (by pid; Linux /proc)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) == session:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # gone already, or not ours


def step_metric(csv_path: Path, key: str) -> dict[int, float]:
    """``{step: value}`` of one metric in a CSVLogger ``metrics.csv``."""
    with open(csv_path, newline="") as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def batches_by_rank(records: list[dict]) -> dict[int, list[tuple[int, int, int]]]:
    """``{rank: [(step, t, positions checksum), ...]}`` in the order the rank trained them."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for r in records:
        if r["event"] == "batch":
            out.setdefault(r["rank"], []).append((r["step"], r["t"], r["positions"]))
    return out
