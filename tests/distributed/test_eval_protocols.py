"""Both perplexity protocols split across ranks in lockstep: what FSDP's collective forwards need.

Under FSDP2 every decoder layer all-gathers its weights when it runs, so a
rank that runs one forward fewer than the others leaves them waiting forever.
The shared scoring loop (:func:`clexlab.evaluation.perplexity.score_windows`)
keeps the ranks in step for both the non-overlapping and the sliding protocol.

* In process: with ``lockstep=True`` every rank calls the model equally often,
  for sliding windows too, and the partial sums add up to one process's.
* Two gloo ranks (this file run as a script, in a subprocess like
  ``tests/distributed/test_strategies.py``): a tiny LLaMA sharded with
  ``fully_shard`` scores both protocols, and a KV policy, over window counts
  that do not split evenly; the reduced sums equal the unsharded model's.
* The in-training callback (``callbacks.long_context_eval``) takes ``protocol``
  and ``stride``; a bad value of either is one line.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from clexlab.arch import architecture_of
from clexlab.evaluation import make_policy, perplexity_at_lengths, sliding_window_perplexity, window_plan

LENGTHS, STRIDE, MAX_TOKENS, BATCH = [32, 64], 24, 320, 1


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


def stream() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 64, size=400)


def score_all(model, **split) -> dict[str, dict[int, tuple[float, int]]]:
    """Both protocols, and the sliding one under a StreamingLLM policy: ``{name: {length: (nll_sum, tokens)}}``."""
    policy = make_policy("streaming", {"n_sink": 2, "n_local": 20, "chunk_size": 16})
    runs = {
        "chunks": perplexity_at_lengths(model, stream(), LENGTHS, MAX_TOKENS, BATCH, **split),
        "sliding": sliding_window_perplexity(model, stream(), LENGTHS, STRIDE, MAX_TOKENS, BATCH, **split),
        "sliding+streaming": sliding_window_perplexity(model, stream(), LENGTHS, STRIDE, MAX_TOKENS, BATCH,
                                                       kv_policy=policy, **split),
    }
    return {name: {n: (r.nll_sum, r.tokens) for n, r in res.items()} for name, res in runs.items()}


def test_sliding_lockstep_ranks_run_the_same_number_of_forwards():
    model, batch = tiny_llama(), 2
    plans = {n: len(window_plan(MAX_TOKENS, n, STRIDE)) for n in LENGTHS}  # 13 and 12 windows: uneven over 3 ranks
    whole = sliding_window_perplexity(model, stream(), LENGTHS, STRIDE, MAX_TOKENS, batch)
    calls, parts = [], []
    for rank in range(3):
        calls.append(0)
        backbone = architecture_of(model).backbone(model)
        hook = backbone.register_forward_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1))
        parts.append(sliding_window_perplexity(model, stream(), LENGTHS, STRIDE, MAX_TOKENS, batch, rank=rank,
                                               world_size=3, lockstep=True))
        hook.remove()
    own = [sum(-(-len(range(r, c, 3)) // batch) for c in plans.values()) for r in range(3)]
    assert len(set(own)) > 1  # without lockstep the ranks would run different numbers of forwards
    assert calls == [max(own)] * 3
    for n in LENGTHS:
        assert sum(p[n].tokens for p in parts) == whole[n].tokens
        assert sum(p[n].nll_sum for p in parts) == pytest.approx(whole[n].nll_sum, rel=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [({"protocol": "overlap"}, "callbacks.long_context_eval.protocol must be one of"),
     ({"protocol": "sliding", "stride": 0}, "callbacks.long_context_eval.stride must be a positive")],
)
def test_the_in_training_callback_takes_either_protocol_and_refuses_others(options, message):
    from clexlab.callbacks.long_context_eval import LongContextEval
    from clexlab.utils.errors import UserError

    callback = LongContextEval(protocol="sliding", stride=16)
    assert (callback.protocol, callback.stride) == ("sliding", 16)
    with pytest.raises(UserError, match=message) as err:
        LongContextEval(**options)
    assert "\n" not in str(err.value)


def batches_per_rank(counts: list[int], world_size: int) -> list[int]:
    """Batches each rank would run on its own share of plans with ``counts`` windows (no lockstep)."""
    return [sum(-(-len(range(r, c, world_size)) // BATCH) for c in counts) for r in range(world_size)]


def test_two_fsdp_ranks_score_both_protocols_like_one_process(tmp_path):
    from clexlab.evaluation import target_budget
    from tests.distributed.helpers import run_ranks

    # Without lockstep the two ranks would run different numbers of forwards under both protocols.
    chunks = [target_budget(LENGTHS, MAX_TOKENS) // n for n in LENGTHS]
    sliding = [len(window_plan(MAX_TOKENS, n, STRIDE)) for n in LENGTHS]
    assert len(set(batches_per_rank(chunks, 2))) == 2 and len(set(batches_per_rank(sliding, 2))) == 2

    out = tmp_path / "scores.json"
    res = run_ranks("-m", "tests.distributed.test_eval_protocols", str(out), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["sharded"] and len(set(got["forwards"])) == 1  # both ranks ran the same forwards
    for name, lengths in got["reference"].items():
        for n, (nll, count) in lengths.items():
            assert got["reduced"][name][n][1] == count, (name, n)
            assert got["reduced"][name][n][0] == pytest.approx(nll, rel=1e-4), (name, n)


# ------------------------------------------------------------------ the two ranks
def _rank(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from clexlab.models.sharding import data_parallel_mesh, gathered_root, is_sharded, shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model = tiny_llama()
        with torch.no_grad():
            reference = score_all(model) if rank == 0 else None
        shard_model(model, data_parallel_mesh(torch.device("cpu")))
        forwards = [0]
        backbone = architecture_of(model).backbone(model)
        backbone.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
        with gathered_root(model):  # the LM head is read without calling forward, as the callback does
            partial = score_all(model, rank=rank, world_size=world_size, lockstep=is_sharded(model))
        reduced = {}
        for name, lengths in partial.items():
            reduced[name] = {}
            for n, (nll, count) in lengths.items():
                sums = torch.tensor([nll, float(count)], dtype=torch.float64)
                dist.all_reduce(sums)
                reduced[name][n] = (float(sums[0]), int(sums[1]))
        counts = [None] * world_size
        dist.all_gather_object(counts, forwards[0])
        if rank == 0:
            payload = {"reference": reference, "reduced": reduced, "forwards": counts, "sharded": is_sharded(model)}
            with open(out, "w") as f:
                json.dump(payload, f)
        dist.barrier()  # no rank tears gloo down while the other is still in the last collective (SIGABRT)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(2, _free_port(), sys.argv[1]), nprocs=2, join=True)
