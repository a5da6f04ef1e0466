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
    ``CLEXLAB_TEST_SIGINT_AT=k``: SIGINT (Ctrl-C) at the same point.
    """

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        for var, signum in (("CLEXLAB_TEST_KILL_AT", signal.SIGKILL), ("CLEXLAB_TEST_SIGINT_AT", signal.SIGINT)):
            at = os.environ.get(var)
            if at and trainer.global_step == int(at):
                os.kill(os.getpid(), signum)


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

    Each case is ``{"args": [...], "env": {...}}``; each result ``{"rc": exit status, "stderr": text}``.
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
