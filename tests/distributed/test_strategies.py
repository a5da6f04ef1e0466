"""Two ranks on CPU (gloo) through Lightning's strategies: DDP and FSDP2 train what one process would.

Three real ``train.py`` runs of the same tiny CLEX model, 6 steps, shared by the tests:

- reference: 1 process, ``data.batch_size=8``;
- ``trainer=ddp`` and ``trainer=fsdp``: 2 processes, ``data.batch_size=4`` each.

clexlab's sampler gives rank r the windows ``r::2`` of the same permutation, so
the two ranks together see exactly the reference's batch at every step; with
gradients averaged correctly (the CLEX ODE's included), the losses, the ODE and
every weight must match the reference. The curriculum draws t = 1 at step 3,
so a step without the ODE in the graph is followed by more steps: DDP without
``find_unused_parameters`` would fail there.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.distributed.helpers import (
    batches_by_rank,
    read_records,
    run_ranks,
    step_metric,
    tiny_args,
)
from tests.reliability.helpers import write_corpus

STEPS = 6
# A snapshot at step 3, outside checkpoints/, for the resume test.
SNAPSHOT = [
    "+callbacks.snap._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.snap.dirpath=${paths.output_dir}/snapshots",
    "+callbacks.snap.every_n_train_steps=3",
    "+callbacks.snap.save_top_k=-1",
    "+callbacks.snap.filename='step-{step}'",
    "+callbacks.snap.auto_insert_metric_name=false",
]
REL = 1e-4  # float32 sums in another order (all-reduce vs one batch)


def common(tmp) -> list[str]:
    return [*tiny_args(), f"trainer.max_steps={STEPS}", "trainer.val_check_interval=3", *write_corpus(tmp / "corpus", 8000, 600)]


def train(tmp, name: str, *extra: str) -> dict:
    """Run train.py; return its run directory, records and exit status."""
    run, records = tmp / name, tmp / f"records-{name}"
    res = run_ranks("train.py", *common(tmp), *extra, f"hydra.run.dir={run}", env={"CLEXLAB_TEST_RECORD_DIR": str(records)})
    return {"rc": res.returncode, "stderr": res.stderr, "run": run, "records": read_records(records) if records.exists() else []}


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("strategies")


@pytest.fixture(scope="module")
def reference(tmp):
    out = train(tmp, "reference", "trainer.devices=1", "data.batch_size=8")
    assert out["rc"] == 0, out["stderr"][-3000:]
    return out


@pytest.fixture(scope="module")
def ddp(tmp):
    return train(tmp, "ddp", "trainer=ddp", "trainer.devices=2", "data.batch_size=4")


@pytest.fixture(scope="module")
def fsdp(tmp):
    return train(tmp, "fsdp", "trainer=fsdp", "trainer.devices=2", "data.batch_size=4", *SNAPSHOT)


def end_records(out: dict) -> dict[int, dict]:
    return {r["rank"]: r for r in out["records"] if r["event"] == "end"}


def check_matches_reference(out: dict, reference: dict) -> None:
    assert out["rc"] == 0, out["stderr"][-3000:]
    run, ref = out["run"], reference["run"]

    # Every rank drew the same t and positions at every step, the ones of the single-process run.
    ranks = batches_by_rank(out["records"])
    assert sorted(ranks) == [0, 1]
    expected = batches_by_rank(reference["records"])[0]
    assert ranks[0] == ranks[1] == expected
    assert [step for step, _, _ in expected] == list(range(STEPS))
    ts = [t for _, t, _ in expected]
    assert 1 in ts[:-1] and max(ts) > 1  # a t = 1 step followed by more steps, and steps through the ODE
    firsts = {r["rank"]: [] for r in out["records"]}
    for r in out["records"]:
        if r["event"] == "batch":
            firsts[r["rank"]].append(r["first_id"])
    assert firsts[0] != firsts[1]  # the ranks trained on different windows

    # The gradients every optimizer step used (averaged over the ranks, before clipping) are the
    # reference's. AdamW and gradient clipping ignore a constant factor, so a rank summing instead of
    # averaging (or skipping the ODE's average) would pass every other check here: it fails this one.
    grads = {}
    for r in out["records"]:
        if r["event"] == "batch":
            grads.setdefault(r["step"], {})[r["rank"]] = r["grads"]
    ref_grads = {r["step"]: r["grads"] for r in reference["records"] if r["event"] == "batch"}
    assert sorted(grads) == sorted(ref_grads) == list(range(STEPS))
    for step, mine in grads.items():
        want = ref_grads[step]
        model = sum(g["sharded"] for g in mine.values()) + mine[0]["plain"]  # shards add up; whole tensors do not
        assert want["plain"] > 0 and model == pytest.approx(want["plain"], rel=1e-4), step
        assert mine[0]["plain"] == pytest.approx(mine[1]["plain"], rel=1e-6), step  # whole tensors: the same on both
        assert mine[0]["ode"] == pytest.approx(mine[1]["ode"], rel=1e-6), step
        assert mine[0]["ode"] == pytest.approx(want["ode"], rel=1e-4, abs=1e-20), step
    assert any(g["ode"] > 0 for g in ref_grads.values())  # steps at t > 1 give the ODE a gradient

    # The loss of the global batch (train/loss is synced over ranks) is the reference's, and it falls.
    losses, ref_losses = step_metric(run / "csv" / "metrics.csv", "train/loss"), step_metric(ref / "csv" / "metrics.csv", "train/loss")
    assert sorted(losses) == list(range(STEPS))
    for step, loss in losses.items():
        assert loss == pytest.approx(ref_losses[step], rel=REL), step
    assert losses[STEPS - 1] < losses[0] - 0.2

    # The CLEX ODE: identical on both ranks, equal to the reference's (a rank stepping on
    # its own gradient would differ by ~lr = 1e-2 in many entries).
    ends, ref_end = end_records(out), end_records(reference)[0]
    assert ends[0]["rope_sum"] == ends[1]["rope_sum"] and ends[0]["rope_abs"] == ends[1]["rope_abs"]
    assert ends[0]["rope_sum"] == pytest.approx(ref_end["rope_sum"], rel=1e-5)
    assert ends[0]["rope_abs"] == pytest.approx(ref_end["rope_abs"], rel=1e-5)

    # One checkpoint set, written once, holding the reference's weights.
    ckpts = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.ckpt") if "snapshots" not in p.parts)
    assert len(ckpts) == 2 and "checkpoints/last.ckpt" in ckpts and any(c.startswith("checkpoints/best-step") for c in ckpts), ckpts
    assert not list(run.rglob("*.tmp"))
    mine = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    theirs = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True)
    assert mine["global_step"] == STEPS
    assert mine["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        torch.testing.assert_close(mine["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)

    # Evaluation during training (at the second validation too: the CLEX table must follow
    # the new ODE weights) and the final one on rank 0 agree with the reference.
    for key in ("val/ppl@32", "val/ppl@64", "val/ppl@128"):
        got, want = step_metric(run / "csv" / "metrics.csv", key), step_metric(ref / "csv" / "metrics.csv", key)
        assert sorted(got) == sorted(want) == [2, 5]
        for step in got:
            assert got[step] == pytest.approx(want[step], rel=REL), (key, step)
    results, ref_results = json.loads((run / "results.json").read_text()), json.loads((ref / "results.json").read_text())
    assert results["world_size"] == 2 and results["global_step"] == STEPS
    for n, ppl in ref_results["ppl"].items():
        assert results["ppl"][n] == pytest.approx(ppl, rel=REL)


def test_ddp_two_ranks_train_what_one_process_trains(ddp, reference):
    check_matches_reference(ddp, reference)
    ends = end_records(ddp)
    assert not ends[0]["layer_sharded"] and not ends[1]["layer_sharded"]


def test_fsdp_two_ranks_train_what_one_process_trains(fsdp, reference):
    check_matches_reference(fsdp, reference)
    for end in end_records(fsdp).values():
        assert end["layer_sharded"] and end["layer_local_numel"] * 2 == end["layer_numel"]  # half a layer per rank
        assert not end["rope_sharded"]  # the ODE stays whole on every rank
    for r in fsdp["records"]:
        if r["event"] == "batch":  # 32-true: no policy, gathered float32 weights, nothing cast
            assert r["linear_weights"] == ["torch.float32"] and r["weight_cast_bytes"] == 0, r

    # eval.py reads the FSDP checkpoint like any other (one full file).
    from clexlab.workflows.evaluate import load_checkpoint

    module, ckpt = load_checkpoint(str(fsdp["run"] / "checkpoints" / "last.ckpt"))
    assert ckpt["global_step"] == STEPS and module.clex_rope is not None


def test_fsdp_checkpoint_resumes_as_if_never_stopped(fsdp, tmp):
    assert fsdp["rc"] == 0, fsdp["stderr"][-3000:]
    snapshot = fsdp["run"] / "snapshots" / "step-3.ckpt"
    assert torch.load(snapshot, weights_only=True)["global_step"] == 3
    resumed = train(tmp, "fsdp-resumed", "trainer=fsdp", "trainer.devices=2", "data.batch_size=4", *SNAPSHOT, f"ckpt_path={snapshot}")
    assert resumed["rc"] == 0, resumed["stderr"][-3000:]
    run = resumed["run"]

    # Steps 3..5 again: the same draws on both ranks and the same losses as the uninterrupted run.
    ranks = batches_by_rank(resumed["records"])
    assert ranks[0] == ranks[1] == batches_by_rank(fsdp["records"])[0][3:]
    losses = step_metric(run / "csv" / "metrics.csv", "train/loss")
    original = step_metric(fsdp["run"] / "csv" / "metrics.csv", "train/loss")
    assert sorted(losses) == [3, 4, 5]
    for step, loss in losses.items():
        assert loss == pytest.approx(original[step], rel=1e-6, abs=1e-6), step

    # The end state: step, ODE and every weight as the uninterrupted run left them.
    assert end_records(resumed)[0]["rope_sum"] == pytest.approx(end_records(fsdp)[0]["rope_sum"], rel=1e-6)
    mine = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    theirs = torch.load(fsdp["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert mine["global_step"] == theirs["global_step"] == STEPS
    for key, value in theirs["state_dict"].items():
        torch.testing.assert_close(mine["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_fsdp_bf16_weights_mixed_precision_checkpointing_and_accumulation(tmp):
    out = train(
        tmp,
        "fsdp-bf16",
        "trainer=fsdp",
        "trainer.devices=2",
        "trainer.max_steps=3",
        "data.batch_size=2",
        "trainer.accumulate_grad_batches=2",
        "model.dtype=bfloat16",           # the model is built in bf16 ...
        "trainer.precision=bf16-mixed",   # ... and trained with bf16 autocast over float32 master weights
        "model.gradient_checkpointing=true",
    )
    assert out["rc"] == 0, out["stderr"][-3000:]
    ranks = batches_by_rank(out["records"])
    assert ranks[0] == ranks[1]
    assert [step for step, _, _ in ranks[0]] == [0, 0, 1, 1, 2, 2]  # two micro-batches per step
    for i in range(0, 6, 2):
        assert ranks[0][i] == ranks[0][i + 1]  # one draw per optimizer step, whatever the micro-batch
    for end in end_records(out).values():
        assert end["dtypes"] == ["torch.float32"]  # upcast ...
        assert end["layer_sharded"] and end["layer_local_numel"] * 2 == end["layer_numel"]  # ... shard by shard
    # FSDP2's mixed precision policy: every forward computed with bf16 weights that FSDP
    # gathered (plain tensors, not the float32 DTensor shards), and autocast made no
    # float32 -> bf16 copy of any of them (it would cache one per linear weight).
    batches = [r for r in out["records"] if r["event"] == "batch"]
    assert len(batches) == 12
    for r in batches:
        assert r["linear_weights"] == ["torch.bfloat16"], r
        assert r["weight_cast_bytes"] == 0, r
    # The CLEX ODE stayed float32 (above) and still learned through the bf16 layers.
    starts = {r["rank"]: r for r in out["records"] if r["event"] == "start"}
    assert any(t > 1 for _, t, _ in ranks[0])
    for rank, end in end_records(out).items():
        assert end["rope_sum"] != starts[rank]["rope_sum"]
    ckpt = torch.load(out["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["dtype"] == "bfloat16" and ckpt["global_step"] == 3
    assert {v.dtype for v in ckpt["state_dict"].values()} == {torch.float32}
    losses = step_metric(out["run"] / "csv" / "metrics.csv", "train/loss")
    assert sorted(losses) == [0, 1, 2] and all(0 < v < 10 for v in losses.values())
