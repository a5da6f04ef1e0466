"""KV policies on whole models: full-budget exactness, chunked prefill, generation, CLEX, partial rotary, options.

Tiny models built in code: a grouped-query LLaMA (4 heads, 2 kv heads) and a
Phi whose heads rotate only half their dimensions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from clexlab.evaluation import perplexity_at_lengths, sliding_window_perplexity
from clexlab.evaluation.kv_policies import make_policy, policy_hidden_states, policy_nll, use_kv_policy
from clexlab.models.loss import hidden_states
from clexlab.utils.errors import UserError

SMALL = {  # budgets well below the 96-token windows used here
    "streaming": {"n_sink": 2, "n_local": 14, "chunk_size": 8},
    "lm_infinite": {"n_global": 2, "n_local": 14, "max_distance": 16, "chunk_size": 8},
    "tokenselect": {"n_init": 2, "n_local": 8, "top_k": 6, "chunk_size": 8},
}
COVERING = {  # budgets of 96 tokens or more: full attention
    "streaming": {"n_sink": 4, "n_local": 92},
    "lm_infinite": {"n_global": 4, "n_local": 96, "max_distance": 96},
    "tokenselect": {"n_init": 4, "n_local": 32, "top_k": 60},
}


def sharpen(model):
    torch.manual_seed(0)
    with torch.no_grad():  # larger weights than the default init: greedy tokens and attention vary
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    model.generation_config.eos_token_id = None
    return model.eval()


def llama(vocab=64, length=32):
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=length)
    config._attn_implementation = "sdpa"
    return sharpen(LlamaForCausalLM(config))


def phi(vocab=64, length=32):
    from transformers import PhiForCausalLM

    from clexlab.arch import get_architecture

    sizes = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "train_length": length,
             "partial_rotary_factor": 0.5}
    return sharpen(PhiForCausalLM(get_architecture("phi").tiny_config(sizes, vocab)))


@pytest.fixture(scope="module", params=["llama", "phi"])
def model(request):
    return {"llama": llama, "phi": phi}[request.param]()


def tokens(n, seed=0, vocab=64):
    return torch.randint(0, vocab, (2, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(COVERING))
def test_a_covering_budget_is_exactly_full_attention(model, name):
    policy = make_policy(name, COVERING[name])
    ids = tokens(96)
    with torch.no_grad():
        full_logits = model(ids).logits
        with use_kv_policy(model, policy):
            assert torch.equal(model(ids).logits, full_logits)
    prompt = tokens(60)[:1]
    greedy = {"attention_mask": torch.ones_like(prompt), "max_new_tokens": 20, "do_sample": False, "pad_token_id": 0}
    full = model.generate(prompt, **greedy)
    with use_kv_policy(model, policy):
        assert torch.equal(model.generate(prompt, **greedy), full)
    assert model.config._attn_implementation == "sdpa"  # restored


def test_a_covering_budget_scores_both_protocols_exactly_as_full_attention():
    model, policy = llama(), make_policy("tokenselect", COVERING["tokenselect"])
    stream = np.random.default_rng(0).integers(0, 64, size=300)
    full = perplexity_at_lengths(model, stream, [48, 96], 192, 2)
    assert perplexity_at_lengths(model, stream, [48, 96], 192, 2, kv_policy=policy) == full
    full = sliding_window_perplexity(model, stream, [96], 40, 200, 2)
    assert sliding_window_perplexity(model, stream, [96], 40, 200, 2, kv_policy=policy) == full


@pytest.mark.parametrize("name", list(SMALL))
def test_small_budgets_change_the_result_and_one_forward_equals_chunked_prefill(model, name):
    """The whole window in one forward (as a prompt, or CLEX's refill) = feeding its chunks through the cache."""
    policy = make_policy(name, SMALL[name])
    ids = tokens(96, seed=1)
    with torch.no_grad(), use_kv_policy(model, policy) as run:
        chunked = policy_hidden_states(model, ids, run)
        run.reset()
        one_forward = hidden_states(model, ids)
    torch.testing.assert_close(one_forward, chunked, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(chunked, hidden_states(model, ids), atol=1e-3)  # the policy did something


@pytest.mark.parametrize("name", ["streaming", "lm_infinite"])
def test_windowed_policies_evict_and_do_not_depend_on_the_chunk_size(model, name):
    ids, labels = tokens(96, seed=2), tokens(96, seed=3)
    results = []
    for chunk in (5, 16):
        policy = make_policy(name, {**SMALL[name], "chunk_size": chunk})
        with torch.no_grad(), use_kv_policy(model, policy) as run:
            results.append(policy_nll(model, ids, labels, run))
            # The cache held the sinks/globals, the window and one chunk: 2 + 13 + 16 at most, not 96.
            assert max(p.numel() for p in run.key_positions.values()) <= 2 + 13 + chunk
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["streaming", "lm_infinite"])
def test_generation_equals_scoring_the_sequence_under_the_policy(name):
    """Greedy decoding with the cache (prompt prefill, then one token at a time) = rescoring by chunked prefill."""
    model = llama()
    policy = make_policy(name, SMALL[name])
    prompt = tokens(30, seed=4)[:1]
    with torch.no_grad(), use_kv_policy(model, policy) as run:
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False,
                             pad_token_id=0)
        ids = prompt
        for _ in range(12):
            last = policy_hidden_states(model, ids, run)[:, -1]
            ids = torch.cat([ids, model.lm_head(last).argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)
    assert len(set(ids[0, 30:].tolist())) > 3  # a real continuation


def test_clex_chunks_run_at_the_scale_of_their_prefix():
    """CLEX's hook refills the cache when a chunk moves t: a chunk = one forward over its whole prefix."""
    from clexlab.rope import install_clex

    model = llama(length=16)
    rope = install_clex(model, train_length=16, max_scale=4)
    with torch.no_grad():
        rope.dynamics.down_proj.normal_(0, 0.3)  # each t has other frequencies
    model.eval()  # the new rotary module too
    policy = make_policy("streaming", {"n_sink": 2, "n_local": 10, "chunk_size": 8})
    ids = tokens(64, seed=5)
    with torch.no_grad(), use_kv_policy(model, policy) as run:
        chunked = policy_hidden_states(model, ids, run)
        for end in (16, 24, 40, 64):  # t = 1, 2, 3, 4
            run.reset()
            prefix = hidden_states(model, ids[:, :end])
            torch.testing.assert_close(chunked[:, end - 8 : end], prefix[:, -8:], rtol=1e-4, atol=1e-5)
        run.reset()
        whole = hidden_states(model, ids)  # every token at the window's t = 4
    assert not torch.allclose(chunked[:, :16], whole[:, :16], atol=1e-3)


def test_perplexity_under_a_policy_splits_across_ranks():
    model = llama()
    stream = np.random.default_rng(1).integers(0, 64, size=300)
    policy = make_policy("streaming", {**SMALL["streaming"], "chunk_size": 32})
    for score in (lambda **kw: perplexity_at_lengths(model, stream, [96], 192, 1, kv_policy=policy, **kw),
                  lambda **kw: sliding_window_perplexity(model, stream, [96], 64, 200, 1, kv_policy=policy, **kw)):
        whole = score()
        parts = [score(rank=r, world_size=2, lockstep=True) for r in range(2)]
        assert sum(p[96].tokens for p in parts) == whole[96].tokens
        assert sum(p[96].nll_sum for p in parts) == pytest.approx(whole[96].nll_sum, rel=1e-5)
    assert whole[96].ppl != sliding_window_perplexity(model, stream, [96], 64, 200, 1)[96].ppl


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("bogus", {}, "eval.kv_policy must be one of"),
        ("streaming", {"n_local": 0}, "eval.kv.n_local must be an integer >= 1"),
        ("lm_infinite", {"n_local": -4}, "eval.kv.n_local must be an integer >= 1"),
        ("tokenselect", {"top_k": 2.5}, "eval.kv.top_k must be an integer >= 1"),
        ("tokenselect", {"top_k": 0}, "eval.kv.top_k must be an integer >= 1"),
        ("tokenselect", {"n_sink": 4}, "eval.kv.n_sink does not apply to kv_policy=tokenselect"),
        ("full", {"top_k": 8}, "eval.kv.top_k does not apply to kv_policy=full"),
        ("lm_infinite", {"n_local": 64, "max_distance": 32}, "eval.kv.max_distance (32) must be >= eval.kv.n_local"),
    ],
)
def test_bad_options_are_one_line_user_errors(name, options, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        make_policy(name, options, train_length=32)
    assert "\n" not in str(err.value)


def test_eval_config_checks_the_policy_and_derives_defaults_from_L():
    from omegaconf import OmegaConf

    from clexlab.utils.schema import validate_node

    with pytest.raises(UserError, match="eval.kv.top_k must be an integer"):
        validate_node("eval", OmegaConf.create({"kv_policy": "tokenselect", "kv": {"top_k": 1.5}}))
    typed = validate_node("eval", OmegaConf.create({"kv_policy": "streaming"}))
    assert make_policy(typed.kv_policy, vars(typed.kv), train_length=128).describe() == "streaming(4+124)"
    assert make_policy("lm_infinite", {}, 128).describe() == "lm_infinite(10+128,d128)"
    assert make_policy("tokenselect", {}, 128).describe() == "tokenselect(128+2048+512)"  # the released defaults
    assert make_policy("full", {"top_k": None}) is None


def test_the_extrapolation_protocol_scores_the_plain_base_under_every_policy(compose_train, tmp_path):
    import json

    from clexlab.workflows.extrapolation import run_extrapolation
    from tests.conftest import FAST

    cfg = compose_train(*FAST, "logger=none", "experiment=extrapolation", "protocol.base_steps=2",
                        "trainer.val_check_interval=2", "clex.max_scale=4", "eval.multiples=[1,4]",
                        "callbacks.long_context_eval.multiples=[1]")
    rows = [m for m in cfg.protocol.methods if m.get("eval")]
    assert [m.eval.kv_policy for m in rows] == ["streaming", "lm_infinite", "tokenselect", "tokenselect"]
    cfg.protocol.methods = rows[:1] + rows[2:3]  # the tiny run: two of them
    run_extrapolation(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    # L = 32: streaming's cache is L (4 sinks + 28 recent); TokenSelect keeps 4 + 64 + 32 of the 128 tokens at 4 x L.
    assert set(summary["methods"]) == {"base", "none@inference+streaming-4+28", "none@inference+tokenselect-4+64+32"}
    base = json.loads((run / "base" / "results.json").read_text())
    for name in ("none@inference+streaming-4+28", "none@inference+tokenselect-4+64+32"):
        row = json.loads((run / name / "results.json").read_text())
        assert row["global_step"] == 0 and row["kv_policy"] == name.split("+", 1)[1].replace("-", "(", 1) + ")"
        assert row["ppl"]["32"] == base["ppl"]["32"]  # the budget covers L: full attention, exactly
        assert row["ppl"]["128"] != base["ppl"]["128"]
