import math

import numpy as np
import pytest
import torch

from clexlab.evaluation import format_table, perplexity_at_lengths, resolve_lengths, results_payload, target_budget
from clexlab.utils.errors import UserError


def test_every_length_scores_the_same_targets(tiny_module):
    tokens = np.random.default_rng(0).integers(0, 256, size=2000).astype(np.uint16)
    res = perplexity_at_lengths(tiny_module.model, tokens, [32, 64, 128], max_tokens=1000, batch_size=3)
    assert {r.tokens for r in res.values()} == {896}  # 7 x lcm(32, 64, 128)
    assert all(math.isfinite(r.ppl) for r in res.values())


def test_perplexity_equals_brute_force(tiny_module):
    model = tiny_module.model.eval()
    tokens = np.random.default_rng(1).integers(0, 256, size=300).astype(np.uint16)
    res = perplexity_at_lengths(model, tokens, [64], max_tokens=256, batch_size=2)[64]
    stream = torch.as_tensor(tokens.astype(np.int64))
    nll = 0.0
    for i in range(4):
        ids = stream[i * 64 : i * 64 + 65]
        with torch.no_grad():
            logits = model(input_ids=ids[None, :-1]).logits[0]
        nll += torch.nn.functional.cross_entropy(logits, ids[1:], reduction="sum").item()
    assert res.tokens == 256
    assert res.ppl == pytest.approx(math.exp(nll / 256), rel=1e-5)


def test_ranks_partition_the_windows(tiny_module):
    tokens = np.random.default_rng(2).integers(0, 256, size=700).astype(np.uint16)
    full = perplexity_at_lengths(tiny_module.model, tokens, [32, 64], 640)
    parts = [perplexity_at_lengths(tiny_module.model, tokens, [32, 64], 640, rank=r, world_size=3) for r in range(3)]
    for n in (32, 64):
        assert sum(p[n].tokens for p in parts) == full[n].tokens
        assert sum(p[n].nll_sum for p in parts) == pytest.approx(full[n].nll_sum, rel=1e-5)


def test_lockstep_ranks_run_the_same_number_of_forwards(tiny_module):
    """FSDP's forwards are collectives: with lockstep every rank calls the model equally often, same sums."""
    tokens = np.random.default_rng(2).integers(0, 256, size=700).astype(np.uint16)
    full = perplexity_at_lengths(tiny_module.model, tokens, [32, 64], 640, batch_size=2)
    calls, parts = [], []
    for r in range(3):  # 20 and 10 windows over 3 ranks: 7/7/6 and 4/3/3, uneven batches
        calls.append(0)
        hook = tiny_module.model.model.register_forward_hook(lambda *_: calls.__setitem__(-1, calls[-1] + 1))
        parts.append(perplexity_at_lengths(tiny_module.model, tokens, [32, 64], 640, 2, rank=r, world_size=3, lockstep=True))
        hook.remove()
    assert calls == [calls[0]] * 3 and calls[0] == 4 + 2  # ceil(7/2) + ceil(4/2) forwards on every rank
    for n in (32, 64):
        assert sum(p[n].tokens for p in parts) == full[n].tokens
        assert sum(p[n].nll_sum for p in parts) == pytest.approx(full[n].nll_sum, rel=1e-5)


def test_too_little_data_is_a_user_error(tiny_module):
    with pytest.raises(UserError, match="lower eval.max_tokens"):
        perplexity_at_lengths(tiny_module.model, np.zeros(100, dtype=np.uint16), [64, 128], 128)


def test_lengths_and_budget():
    assert resolve_lengths(128, [1, 2, 4, 8]) == [128, 256, 512, 1024]
    assert resolve_lengths(128, [1, 2], [300, 100]) == [100, 300]
    assert target_budget([128, 256, 1024], 5000) == 4096
    assert target_budget([128, 1024], 10) == 1024
    with pytest.raises(UserError):
        resolve_lengths(128, [1], [0])


def test_table_and_payload():
    from clexlab.evaluation import LengthResult

    res = {32: LengthResult(32, 100 * math.log(4.0), 100), 64: LengthResult(64, 100 * math.log(5.0), 100)}
    table = format_table(res, 32)
    assert "| 64 | 2 | 5.000 | 1.250 | 100 |" in table
    payload = results_payload(res, 32, rope="clex")
    assert payload["train_length"] == 32 and payload["rope"] == "clex"
    assert payload["ppl"] == {"32": pytest.approx(4.0), "64": pytest.approx(5.0)}
