"""``python train.py -m seed=0,1 trainer=ddp trainer.devices=2``: two jobs of two ranks, each run once.

Lightning starts rank 1 by re-running the command line; in a multirun that
command line holds ``-m`` and the whole sweep (clexlab.utils.distributed).
Each job must get its own rank 1, writing into its own sweep subdirectory,
and the sweep must be launched once.
"""

from __future__ import annotations

import json

import yaml

from tests.distributed.helpers import batches_by_rank, read_records, run_ranks, tiny_args
from tests.reliability.helpers import write_corpus


def test_multirun_of_two_ddp_jobs_runs_each_job_once(tmp_path):
    sweep, records = tmp_path / "sweep", tmp_path / "records"
    res = run_ranks(
        "train.py", "-m", "seed=0,1", "trainer=ddp", "trainer.devices=2", "data.batch_size=4",
        *tiny_args(), "trainer.max_steps=2", "trainer.val_check_interval=2", "eval.multiples=[1,2]",
        *write_corpus(tmp_path / "corpus", 4000, 400), f"hydra.sweep.dir={sweep}",
        env={"CLEXLAB_TEST_RECORD_DIR": str(records)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    output = res.stdout + res.stderr
    assert output.count("Launching 2 jobs") == 1, output[-3000:]  # a rank re-running the sweep would print it again

    # Exactly two runs' outputs, each with its own seed.
    assert sorted(p.relative_to(sweep).as_posix() for p in sweep.rglob("results.json")) == ["0/results.json", "1/results.json"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in (0, 1):
        assert json.loads((sweep / str(job) / "results.json").read_text())["seed"] == job
        assert f"seed={job}" in yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text())
        assert sorted(p.name for p in (sweep / str(job) / "checkpoints").iterdir())[-1] == "last.ckpt"

    # Two ranks per job, both writing into the job's directory; a new rank 1 for each job.
    found = read_records(records)
    ends = [r for r in found if r["event"] == "end"]
    assert sorted((r["output_dir"], r["rank"]) for r in ends) == [(str(sweep / j), k) for j in ("0", "1") for k in (0, 1)]
    rank1 = {r["output_dir"]: r["pid"] for r in ends if r["rank"] == 1}
    rank0 = {r["output_dir"]: r["pid"] for r in ends if r["rank"] == 0}
    assert len(set(rank1.values())) == 2 and len(set(rank0.values())) == 1  # rank 0 is the sweep's own process
    for job in ("0", "1"):
        ranks = batches_by_rank([r for r in found if r["output_dir"] == str(sweep / job)])
        assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1] and len(ranks[0]) == 2  # same draws on both ranks
