"""Sliding-window perplexity: brute force agreement, same targets at every length, bounded logits."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clexlab.evaluation import perplexity_at_lengths, sliding_window_perplexity, window_plan
from clexlab.utils.errors import UserError


def stream(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=n).astype(np.uint16)


def brute_force_nll(model, tokens, length, stride, budget):
    """Independent reference: each target j in 1..M is scored by the first window that predicts it.

    Windows start at 0, stride, 2·stride, ... while they end before M, plus one
    window ending exactly at M; every window is run through the plain
    transformers forward (full logits, no chunking, no label masking).
    """
    starts = list(range(0, budget - length, stride)) + [budget - length]
    ids = torch.as_tensor(tokens[: budget + 1].astype(np.int64))
    logprobs = {}
    with torch.no_grad():
        for s in starts:
            logits = model(input_ids=ids[None, s : s + length]).logits[0].float()
            lp = F.log_softmax(logits, -1)
            for i in range(length):
                j = s + i + 1  # the target this position predicts
                logprobs.setdefault(j, -lp[i, ids[j]].item())
    assert sorted(logprobs) == list(range(1, budget + 1))
    return sum(logprobs.values())


@pytest.mark.parametrize("length,stride,budget", [(32, 8, 100), (64, 24, 150), (32, 32, 96)])
def test_sliding_equals_brute_force(tiny_module, length, stride, budget):
    model = tiny_module.model.eval()
    with torch.no_grad():  # a non-trivial ODE, so windows beyond L use moved frequencies
        tiny_module.clex_rope.dynamics.down_proj.normal_(0, 0.2)
    tokens = stream(400, seed=length + stride)
    res = sliding_window_perplexity(model, tokens, [length], stride, budget, batch_size=3)[length]
    assert res.tokens == budget
    assert res.nll_sum == pytest.approx(brute_force_nll(model, tokens, length, stride, budget), rel=1e-5)


def test_stride_of_a_whole_window_is_the_chunks_protocol(tiny_module):
    tokens = stream(600, seed=3)
    chunks = perplexity_at_lengths(tiny_module.model, tokens, [32, 64], 256, batch_size=2)
    sliding = sliding_window_perplexity(tiny_module.model, tokens, [32, 64], 64, 256, batch_size=2)  # 64 >= 32: clipped
    for n in (32, 64):
        assert sliding[n].tokens == chunks[n].tokens == 256
        assert sliding[n].nll_sum == pytest.approx(chunks[n].nll_sum, rel=1e-6)


def test_every_length_scores_each_target_once_with_enough_context():
    budget, stride = 1000, 48
    for length in (64, 128, 256, 1000):
        plan = window_plan(budget, length, stride)
        scored = []
        for start, first_new in plan:
            targets = range(max(first_new, start + 1), start + length + 1)
            scored += targets
            if start > 0:  # after the first window, every scored target sees >= length - stride tokens
                assert min(targets) - start - 1 >= length - stride
        assert scored == list(range(1, budget + 1))
        assert all(0 <= s <= budget - length for s, _ in plan)
    assert window_plan(100, 40, 1000) == [(0, 1), (40, 41), (60, 81)]  # stride clipped to the length


def test_ranks_partition_the_windows(tiny_module):
    tokens = stream(500, seed=4)
    full = sliding_window_perplexity(tiny_module.model, tokens, [32, 64], 16, 300)
    parts = [sliding_window_perplexity(tiny_module.model, tokens, [32, 64], 16, 300, rank=r, world_size=2) for r in range(2)]
    for n in (32, 64):
        assert sum(p[n].tokens for p in parts) == full[n].tokens == 300
        assert sum(p[n].nll_sum for p in parts) == pytest.approx(full[n].nll_sum, rel=1e-5)


def test_loss_never_materializes_length_by_vocab_logits(tiny_module, monkeypatch):
    """The largest float32 logits tensor is [batch, chunk, vocab], never [batch, length, vocab]."""
    model = tiny_module.model
    vocab, length, chunk, batch = model.config.vocab_size, 128, 16, 2
    seen = []
    cross_entropy = F.cross_entropy

    def spy(logits, *args, **kwargs):
        seen.append((tuple(logits.shape), logits.dtype))
        return cross_entropy(logits, *args, **kwargs)

    def no_full_head(*args, **kwargs):
        raise AssertionError("the full lm_head forward would build [batch, length, vocab] logits")

    monkeypatch.setattr(F, "cross_entropy", spy)
    monkeypatch.setattr(model.lm_head, "forward", no_full_head)
    res = sliding_window_perplexity(model, stream(600, seed=5), [length], 32, 384, batch_size=batch, chunk_size=chunk)
    assert math.isfinite(res[length].ppl)
    assert seen and max(shape[0] for shape, _ in seen) <= batch * chunk
    assert {shape[1] for shape, _ in seen} == {vocab} and {dtype for _, dtype in seen} == {torch.float32}


def test_bad_input_is_a_user_error(tiny_module):
    with pytest.raises(UserError, match="lower eval.max_tokens"):
        sliding_window_perplexity(tiny_module.model, stream(100), [64, 128], 16, 64)
    with pytest.raises(UserError, match="eval.stride"):
        sliding_window_perplexity(tiny_module.model, stream(1000), [64], 0, 128)
