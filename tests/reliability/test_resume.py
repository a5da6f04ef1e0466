"""A run stopped by Ctrl-C, then killed with SIGKILL, then resumed with ckpt_path=auto, loses nothing.

Four real ``train.py`` processes on a tiny corpus whose epoch is 10 steps:

- A: 14 uninterrupted steps (the reference);
- B: Ctrl-C during step 5: finishes it, saves ``last.ckpt`` at step 6, exits 130;
- C: resumes B, saves every 4 steps, is SIGKILLed during step 9 (last.ckpt: step 8, mid-epoch);
- D: ``ckpt_path=auto`` finds C's checkpoint (the newest of the same overrides)
  and trains steps 8..13 across the epoch boundary.

Every logged step loss of B and D equals A's within 1e-6.
"""

import signal

import torch

from tests.conftest import run_cli
from tests.reliability.helpers import FAULT, step_losses, write_corpus

TOL = 1e-6
MAX_DIFF: dict[str, float] = {}  # reported by the test for the record


def common(tmp_path):
    return [
        "trainer.max_steps=14",
        "trainer.val_check_interval=5",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        "data.batch_size=4",
        "data.val_max_windows=4",
        "callbacks.long_context_eval.multiples=[1,2]",
        "callbacks.long_context_eval.max_tokens=64",
        "eval.multiples=[1,2]",
        "eval.max_tokens=64",
        "model.train_length=32",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "clex.max_scale=4",
        "optim.warmup_steps=2",  # a moving LR: a schedule restored wrong would show in the losses
        "logger=csv",
        "callbacks.last_checkpoint.every_n_train_steps=4",
        f"paths.root_dir={tmp_path}",  # ckpt_path=auto searches <root_dir>/outputs
        FAULT,
        *write_corpus(tmp_path / "corpus"),
    ]


def test_sigint_then_sigkill_then_auto_resume_continues_exactly(tmp_path):
    args = common(tmp_path)
    outputs = tmp_path / "outputs"

    ref = run_cli("train.py", *args, f"hydra.run.dir={tmp_path / 'A'}", timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    expected = step_losses(tmp_path / "A" / "csv" / "metrics.csv")
    assert sorted(expected) == list(range(14))

    # B: Ctrl-C in the middle of step 5 -> the step completes, last.ckpt at step 6, exit 128 + SIGINT.
    b = run_cli("train.py", *args, f"hydra.run.dir={outputs / 'B'}", env={"CLEXLAB_TEST_SIGINT_AT": "5"}, timeout=300)
    assert b.returncode == 128 + signal.SIGINT, b.stderr[-3000:]
    assert "Traceback" not in b.stderr
    assert "stopped by SIGINT after step 6" in b.stderr and "ckpt_path=" in b.stderr
    b_ckpt = outputs / "B" / "checkpoints" / "last.ckpt"
    assert torch.load(b_ckpt, weights_only=True)["global_step"] == 6
    assert not (outputs / "B" / "results.json").exists()  # a stopped run is not evaluated
    got_b = step_losses(outputs / "B" / "csv" / "metrics.csv")
    assert sorted(got_b) == list(range(6))

    # C: resume B, SIGKILL during step 9: the newest checkpoint is the periodic one at step 8.
    c = run_cli(
        "train.py", *args, f"ckpt_path={b_ckpt}", f"hydra.run.dir={outputs / 'C'}", env={"CLEXLAB_TEST_KILL_AT": "9"}, timeout=300
    )
    assert c.returncode == -signal.SIGKILL, c.stderr[-3000:]
    c_ckpt = outputs / "C" / "checkpoints" / "last.ckpt"
    saved = torch.load(c_ckpt, weights_only=True)
    assert saved["global_step"] == 8
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_done"] == 8  # mid-epoch (10 per epoch)
    assert not list((outputs / "C" / "checkpoints").glob("*.tmp"))

    # D: the same command with ckpt_path=auto picks C's last.ckpt (newer than B's) and finishes.
    d = run_cli("train.py", *args, "ckpt_path=auto", f"hydra.run.dir={outputs / 'D'}", timeout=300)
    assert d.returncode == 0, d.stderr[-3000:]
    got_d = step_losses(outputs / "D" / "csv" / "metrics.csv")
    assert sorted(got_d) == list(range(8, 14))  # resumed at 8: C's checkpoint, not B's

    diffs = {step: abs(got[step] - expected[step]) for got in (got_b, got_d) for step in got}
    MAX_DIFF["max"] = max(diffs.values())
    print(f"max |loss difference| over {len(diffs)} resumed/interrupted steps: {MAX_DIFF['max']:.3g}")
    assert max(diffs.values()) <= TOL, diffs
    # and the losses moved: identical numbers are not a vacuous comparison
    assert len({round(v, 6) for v in expected.values()}) > 10
