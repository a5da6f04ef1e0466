"""KV policies at the attention level, held against their definitions written out query by query.

The reference below knows nothing of the implementation's tricks (rotating a
query instead of many keys, stationary heads, segments): for every query it
lists the keys the policy lets it see and the relative distance each one gets,
and scores pre-RoPE heads rotated by that distance, in float64, with its own
RoPE (complex multiplication). Heads are grouped (4 query heads, 2 kv heads)
and, in one case, only part of each head rotates (Phi / GPT-NeoX).
"""

from __future__ import annotations

import math

import pytest
import torch

from clexlab.evaluation.kv_policies import make_policy
from clexlab.evaluation.kv_policies.base import Block
from clexlab.evaluation.kv_policies.rotation import Rotary

H, HKV, D = 4, 2, 16


def rope(x: torch.Tensor, pos: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """``x`` rotated at ``pos`` with rotate_half pairing (i, i + half), via complex numbers; float64."""
    half = inv_freq.numel()
    z = torch.complex(x[..., :half].double(), x[..., half : 2 * half].double())
    angles = pos.double().unsqueeze(-1) * inv_freq.double()
    z = z * torch.polar(torch.ones_like(angles), angles)
    return torch.cat([z.real, z.imag, x[..., 2 * half :].double()], dim=-1)


def heads(n: int, rot_dim: int = D, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, h, n, D, generator=g) for h in (H, HKV, HKV))
    inv_freq = 1.0 / 10000 ** (torch.arange(0, rot_dim, 2).float() / rot_dim)
    return q, k, v, inv_freq


def reference(q, k, v, inv_freq, sets):
    """``sets[i]``: ``{key j: relative distance}`` for query i. Output ``[1, n, H, D]`` float64."""
    n = q.shape[2]
    out = torch.zeros(1, n, H, D, dtype=torch.float64)
    for i in range(n):
        js = sorted(sets[i])
        dist = torch.tensor([sets[i][j] for j in js], dtype=torch.float64)
        for h in range(H):
            kv = h // (H // HKV)  # grouped-query attention: query head h uses kv head h // groups
            qi = rope(q[0, h, i].expand(len(js), D), dist, inv_freq)  # the query d away from a key at position 0
            logits = (qi * k[0, kv, js].double()).sum(-1) / math.sqrt(D)
            out[0, i, h] = torch.softmax(logits, 0) @ v[0, kv, js].double()
    return out


def run_policy(policy, q, k, v, inv_freq, chunk):
    """Feed the policy blocks of ``chunk`` queries with keys rotated at their positions, as the attention does."""
    n = q.shape[2]
    pos = torch.arange(n)
    qr, kr = rope(q, pos, inv_freq).float(), rope(k, pos, inv_freq).float()
    state, stats, outs = {}, {}, []
    for b0 in range(0, n, chunk):
        b1 = min(b0 + chunk, n)
        block = Block(qr[:, :, b0:b1], kr[:, :, :b1], v[:, :, :b1], pos[b0:b1], pos[:b1], Rotary(inv_freq), D**-0.5,
                      state=state, stats=stats)
        outs.append(policy.attend(block))
    return torch.cat(outs, dim=1), stats


def streaming_sets(n, n_sink, n_local, compact=True):
    sets = []
    for i in range(n):
        lo = max(n_sink, i - n_local + 1)
        window = list(range(lo, i + 1))
        sinks = [s for s in range(min(n_sink, i + 1))]
        q_cache = len(sinks) + len(window) - 1 if i >= n_sink else i  # the query's index in the cache
        d = {s: (q_cache - s if compact else i - s) for s in sinks}
        d.update({j: i - j for j in window})
        sets.append(d)
    return sets


def lm_infinite_sets(n, n_global, n_local, max_distance):
    sets = []
    for i in range(n):
        keys = {j for j in range(min(n_global, i + 1))} | set(range(max(0, i - n_local + 1), i + 1))
        sets.append({j: min(i - j, max_distance) for j in keys})
    return sets


def tokenselect_sets(q, k, inv_freq, n_init, n_local, top_k, chunk, compact=True):
    """TokenSelect as the released code runs it: per chunk, mean query at n_local + i vs pre-RoPE keys."""
    n, sets = q.shape[2], []
    for b0 in range(0, n, chunk):
        b1 = min(b0 + chunk, n)
        if b1 <= n_init + top_k + n_local:
            sets += [{j: i - j for j in range(i + 1)} for i in range(b0, b1)]
            continue
        local_start = min(b0, b1 - n_local)
        cand = list(range(n_init, local_start))
        if len(cand) > top_k:
            fp = rope(q[0, :, b0:b1], torch.arange(b1 - b0) + n_local, inv_freq).mean(dim=1)  # [H, D]
            votes = torch.zeros(len(cand), dtype=torch.float64)
            for h in range(H):
                votes += torch.softmax(k[0, h // (H // HKV), cand].double() @ fp[h], 0)
            cand = sorted(cand[j] for j in votes.topk(top_k).indices.tolist())
        kept = list(range(n_init)) + cand + list(range(local_start, b1))
        index = {j: c for c, j in enumerate(kept)}
        for i in range(b0, b1):
            sets.append({j: (index[i] - index[j] if compact else i - j) for j in kept if j <= i})
    return sets


@pytest.mark.parametrize("rot_dim", [D, D // 2])  # full and partial rotary
@pytest.mark.parametrize("compact", [True, False])
def test_streaming_matches_its_definition(rot_dim, compact):
    q, k, v, inv_freq = heads(40, rot_dim)
    policy = make_policy("streaming", {"n_sink": 3, "n_local": 9, "positions": "compact" if compact else "original"})
    got, _ = run_policy(policy, q, k, v, inv_freq, chunk=7)
    want = reference(q, k, v, inv_freq, streaming_sets(40, 3, 9, compact))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rot_dim", [D, D // 2])
@pytest.mark.parametrize("max_distance", [11, 20])  # the ceiling bites, and only for the farthest globals
def test_lm_infinite_matches_its_definition(rot_dim, max_distance):
    q, k, v, inv_freq = heads(40, rot_dim, seed=1)
    policy = make_policy("lm_infinite", {"n_global": 3, "n_local": 8, "max_distance": max_distance})
    got, _ = run_policy(policy, q, k, v, inv_freq, chunk=6)
    want = reference(q, k, v, inv_freq, lm_infinite_sets(40, 3, 8, max_distance))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rot_dim", [D, D // 2])
@pytest.mark.parametrize("compact", [True, False])
def test_tokenselect_matches_the_released_algorithm(rot_dim, compact):
    q, k, v, inv_freq = heads(48, rot_dim, seed=2)
    options = {"n_init": 2, "n_local": 6, "top_k": 5, "positions": "compact" if compact else "original",
               "similarity_threshold": 1.5, "chunk_size": 6}
    got, stats = run_policy(make_policy("tokenselect", options), q, k, v, inv_freq, chunk=6)
    want = reference(q, k, v, inv_freq, tokenselect_sets(q, k, inv_freq, 2, 6, 5, 6, compact))
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
    assert stats["selected"] == 6 and stats["reused"] == 0  # chunks 3..8 select (the first two fit the budget)


def causal(q, k, v, inv_freq):
    n = q.shape[2]
    return reference(q, k, v, inv_freq, [{j: i - j for j in range(i + 1)} for i in range(n)])


@pytest.mark.parametrize(
    "name, options",
    [
        ("streaming", {"n_sink": 4, "n_local": 30}),
        ("lm_infinite", {"n_global": 2, "n_local": 30, "max_distance": 30}),
        ("tokenselect", {"n_init": 2, "n_local": 4, "top_k": 30}),
    ],
)
def test_a_budget_covering_the_context_is_full_attention_in_the_policy_code_too(name, options):
    """The attention skips the policy when the budget covers the sequence; called anyway, it computes full attention."""
    q, k, v, inv_freq = heads(30, seed=3)
    policy = make_policy(name, {**options, "chunk_size": 8})
    assert policy.covers(30) and not policy.covers(10_000)
    got, _ = run_policy(policy, q, k, v, inv_freq, chunk=8)
    torch.testing.assert_close(got.double(), causal(q, k, v, inv_freq), rtol=1e-4, atol=1e-5)


def test_tokenselect_keeping_every_candidate_is_full_attention():
    """A chunk longer than n_local keeps its own start: with every candidate selected nothing is cut."""
    q, k, v, inv_freq = heads(32, seed=4)
    policy = make_policy("tokenselect", {"n_init": 2, "n_local": 4, "top_k": 20, "chunk_size": 16})
    assert not policy.covers(32)  # the second chunk runs the selection code (14 candidates <= 20)
    got, _ = run_policy(policy, q, k, v, inv_freq, chunk=16)
    torch.testing.assert_close(got.double(), causal(q, k, v, inv_freq), rtol=1e-4, atol=1e-5)


def test_grouped_query_heads_read_their_own_kv_head():
    q, k, _, inv_freq = heads(40, seed=5)
    v = torch.stack([torch.zeros(40, D), torch.ones(40, D)]).unsqueeze(0)  # kv head 0 says 0, kv head 1 says 1
    for name, options in [("streaming", {"n_sink": 2, "n_local": 6}),
                          ("lm_infinite", {"n_global": 2, "n_local": 6, "max_distance": 6}),
                          ("tokenselect", {"n_init": 2, "n_local": 6, "top_k": 4, "chunk_size": 6})]:
        out, _ = run_policy(make_policy(name, options), q, k, v, inv_freq, chunk=6)
        assert torch.allclose(out[0, :, :2], torch.zeros(40, 2, D)), name
        assert torch.allclose(out[0, :, 2:], torch.ones(40, 2, D)), name


def needle_case(n=64, needle=20, size=12.0):
    """A key at ``needle`` that every query points straight at, in the dimensions RoPE leaves alone (partial rotary)."""
    q, k, v, inv_freq = heads(n, rot_dim=D // 2, seed=6)
    direction = torch.zeros(D)
    direction[D // 2 :] = torch.randn(D // 2, generator=torch.Generator().manual_seed(7))
    q[:] = direction  # every query the same: the needle wins every head's vote at any distance
    k[0, :, needle] = size * direction / direction.norm()
    v[0, :, needle] = 100.0  # attending to it shows in the output
    return q, k, v, inv_freq


def test_tokenselect_selects_the_dominant_key_and_streaming_cannot_see_it():
    q, k, v, inv_freq = needle_case()
    # Every block selects afresh (identical queries would otherwise reuse the first selection, made
    # before the needle was a candidate: the Selection Cache's blind spot).
    options = {"n_init": 2, "n_local": 8, "top_k": 1, "chunk_size": 8, "similarity_threshold": 1.5}
    policy = make_policy("tokenselect", options)
    out, stats = run_policy(policy, q, k, v, inv_freq, chunk=8)
    assert stats["selected"] > 0
    # Blocks after the needle left the local window (positions >= 32) attend to it through the selection ...
    assert bool((out[0, 32:] > 5).all())
    # ... streaming with the same window and sinks never sees it again.
    stream, _ = run_policy(make_policy("streaming", {"n_sink": 2, "n_local": 8}), q, k, v, inv_freq, chunk=8)
    assert bool((stream[0, 32:].abs() < 5).all())


def test_selection_cache_reuses_selections_of_similar_queries():
    q, k, v, inv_freq = needle_case(needle=4)
    base = {"n_init": 2, "n_local": 8, "top_k": 3, "chunk_size": 8}
    never, s_never = run_policy(make_policy("tokenselect", {**base, "similarity_threshold": 1.01}), q, k, v, inv_freq,
                                8)
    reuse, s_reuse = run_policy(make_policy("tokenselect", {**base, "similarity_threshold": 0.9}), q, k, v, inv_freq, 8)
    # Blocks 2..8 select (block 1 fits the budget). Identical queries: the first selection serves all later blocks.
    assert (s_never["selected"], s_never["reused"]) == (7, 0)
    assert (s_reuse["selected"], s_reuse["reused"]) == (1, 6)
    assert bool((reuse[0, 16:] > 5).all())  # the reused selection still holds the needle
    # With a threshold above 1 the output is the one without any cache (the released algorithm, as above).
    want = reference(q, k, v, inv_freq, tokenselect_sets(q, k, inv_freq, 2, 8, 3, 8))
    torch.testing.assert_close(never.double(), want, rtol=1e-4, atol=1e-4)
