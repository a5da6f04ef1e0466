"""SIGTERM to one rank of two: both ranks finish the same step, ``last.ckpt`` is saved, the job exits 143.

SLURM and Kubernetes send SIGTERM before pre-empting a job, and not always to
every process at once. Here only rank 1 gets it, in the middle of step 2 (after
its forward, before its backward); rank 0 learns of it through the stop
decision the ranks take together after each step.

Lightning 2.6 installs its own SIGTERM handler when fit starts; ``LastCheckpoint``
installs its handlers in ``on_train_start``, after Lightning's, so that its own
stop decision (taken by the ranks together after each step) is what runs.
Before that fix this test hung: Lightning's handler broadcasts from inside the
signal handler, and with only rank 1 signalled the ranks' collectives went out
of step.
"""

from __future__ import annotations

import signal

import torch

from tests.distributed.helpers import batches_by_rank, read_records, run_ranks, tiny_args
from tests.reliability.helpers import FAULT, write_corpus

def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_saves(tmp_path):
    run, records = tmp_path / "run", tmp_path / "records"
    res = run_ranks(
        "train.py", *tiny_args(), "trainer.max_steps=6", "trainer.val_check_interval=6", FAULT,
        "trainer=ddp", "trainer.devices=2", "data.batch_size=4", *write_corpus(tmp_path / "corpus", 8000, 600),
        f"hydra.run.dir={run}",
        timeout=180,
        env={
            "CLEXLAB_TEST_RECORD_DIR": str(records),
            "CLEXLAB_TEST_SIGTERM_AT": "2",
            "CLEXLAB_TEST_SIGNAL_RANK": "1",
            "CLEXLAB_DEBUG": "",  # the exit status of a user-facing stop, not a debugging traceback
        },
    )
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert "SIGTERM received" in res.stderr  # rank 1's handler
    assert "stopped by SIGTERM after step 3" in res.stderr and "ckpt_path=" in res.stderr

    ranks = batches_by_rank(read_records(records))
    assert sorted(ranks) == [0, 1]
    assert [step for step, _, _ in ranks[0]] == [step for step, _, _ in ranks[1]] == [0, 1, 2]  # the same last step
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3  # step 2 finished, then saved: resumable at step 3
    assert not (run / "results.json").exists()  # a stopped run is not evaluated
    assert not list(run.rglob("*.tmp"))
