"""Test-only pieces for the reliability tests: fault injection and CSV reading.

``FaultInjector`` is added to a real ``train.py`` run with
``+callbacks.fault._target_=tests.reliability.helpers.FaultInjector``; what it
does comes from environment variables, so every run of a resume chain has the
same command-line overrides (which ``ckpt_path=auto`` compares).
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import lightning as L

FAULT = "+callbacks.fault._target_=tests.reliability.helpers.FaultInjector"


class FaultInjector(L.Callback):
    """Send a signal to this very process in the middle of a given step.

    ``CLEXLAB_TEST_KILL_AT=k``: SIGKILL during step k (after its forward, before
    its backward): the step's work is lost, as in a real pre-emption.
    ``CLEXLAB_TEST_SIGINT_AT=k``: SIGINT (Ctrl-C) at the same point;
    ``CLEXLAB_TEST_SIGTERM_AT=k``: SIGTERM (what SLURM sends before pre-empting).
    ``CLEXLAB_TEST_SIGNAL_RANK=r``: only rank r is signalled (default: every rank).
    """

    SIGNALS = (
        ("CLEXLAB_TEST_KILL_AT", signal.SIGKILL),
        ("CLEXLAB_TEST_SIGINT_AT", signal.SIGINT),
        ("CLEXLAB_TEST_SIGTERM_AT", signal.SIGTERM),
    )

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        rank = os.environ.get("CLEXLAB_TEST_SIGNAL_RANK")
        if rank is not None and int(rank) != trainer.global_rank:
            return
        for var, signum in self.SIGNALS:
            at = os.environ.get(var)
            if at and trainer.global_step == int(at):
                os.kill(os.getpid(), signum)


class GlobalRNGDraws(L.Callback):
    """Draw from Python's, numpy's and torch's global generators at every step, as a user's callback might.

    Appends ``{"step", "python", "numpy", "torch", "loss"}`` per training batch to ``path`` (JSON lines),
    so two runs can be compared step by step.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import random

        import numpy as np
        import torch

        self._draw = {
            "step": trainer.global_step,
            "python": random.random(),
            "numpy": float(np.random.rand()),
            "torch": float(torch.rand(())),
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import json

        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({**self._draw, "loss": float(loss)}) + "\n")


def read_draws(path: Path) -> dict[int, dict]:
    """``{step: record}`` of a :class:`GlobalRNGDraws` file."""
    import json

    return {r["step"]: r for r in map(json.loads, Path(path).read_text().splitlines())}


class OptimizerWatch(L.Callback):
    """Record, per optimizer step, which weights, AdamW moments and per-parameter step counts changed.

    Records go to the class attribute ``records`` (the test runs in this process):
    ``{"step", "weights", "moments", "counts", "lr"}``, each a set of parameter names.
    """

    records: list[dict] = []

    def _state(self, trainer, pl_module) -> dict:
        optimizer = trainer.optimizers[0]
        names = {id(p): n for n, p in pl_module.named_parameters()}
        state = {}
        for p, s in optimizer.state.items():
            if names.get(id(p)) is not None and s:
                state[names[id(p)]] = (s["exp_avg"].clone(), s["exp_avg_sq"].clone(), float(s["step"]))
        weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        return {"state": state, "weights": weights, "lr": [g["lr"] for g in optimizer.param_groups]}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before, self._step = self._state(trainer, pl_module), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import torch

        after, before = self._state(trainer, pl_module), self._before
        moved = lambda a, b: not torch.equal(a, b)  # noqa: E731
        self.records.append({
            "step": self._step,
            "weights": {n for n, w in after["weights"].items() if moved(w, before["weights"][n])},
            "moments": {n for n, s in after["state"].items() if n not in before["state"]
                        or moved(s[0], before["state"][n][0]) or moved(s[1], before["state"][n][1])},
            "counts": {n for n, s in after["state"].items() if n not in before["state"] or s[2] != before["state"][n][2]},
            "lr": before["lr"],
        })


def step_losses(csv_path: Path) -> dict[int, float]:
    """``{step: train/loss}`` from a CSVLogger ``metrics.csv``."""
    losses: dict[int, float] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


def write_corpus(root: Path, train_chars: int = 1300, other_chars: int = 400) -> list[str]:
    """Small deterministic text files and the ``data=text`` overrides that read them."""
    root.mkdir(parents=True, exist_ok=True)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]

    def text(n: int, shift: int) -> str:
        out, i = [], shift
        while sum(len(w) + 1 for w in out) < n:
            out.append(words[(i * 7 + i // 3) % len(words)])
            i += 1
        return " ".join(out)[:n]

    for name, n, shift in (("train.txt", train_chars, 0), ("val.txt", other_chars, 3), ("test.txt", other_chars, 5)):
        (root / name).write_text(text(n, shift))
    return [
        "data=text",
        f"data.corpus.train_files=[{root / 'train.txt'}]",
        f"data.corpus.val_files=[{root / 'val.txt'}]",
        f"data.corpus.test_files=[{root / 'test.txt'}]",
    ]


def run_many(cases: list[dict], timeout: int = 300) -> list[dict]:
    """Run several ``train.py`` command lines in ONE fresh Python process (imports paid once).

    Each case is ``{"args": [...], "env": {...}}`` (and ``"script": "eval.py"`` for eval.py); each result
    ``{"rc": exit status, "stderr": text}``.
    ``tests/reliability/cli_driver.py`` calls the real Hydra entry point per case.
    """
    import json
    import subprocess
    import sys
    import tempfile

    from tests.conftest import ROOT

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cases, f)
    out = Path(f.name).with_suffix(".out.json")
    res = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "reliability" / "cli_driver.py"), f.name, str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0 and out.exists(), res.stderr[-3000:]
    return json.loads(out.read_text())
