"""Greedy decoding with the KV cache equals decoding by full recomputation under CLEX.

The refill counter pins that the hook really intervened: a transformers release
that renames the cache argument again turns into a failing test here, not into
silently different tokens.
"""

import pytest
import torch
import transformers
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from clexlab.rope import install_clex
from clexlab.rope.generation import CLEXCache, cache_argument

L = 16


@pytest.fixture
def clex_model():
    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=L,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # sharper than the default init, so greedy tokens vary
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3)
    rope = install_clex(model, train_length=L, max_scale=4)
    with torch.no_grad():  # a trained-looking ODE, so each t really has other frequencies
        rope.dynamics.down_proj.normal_(0, 0.3)
    model.generation_config.eos_token_id = None  # never stop early: compare all 50 tokens
    return model.eval()


def full_recompute_greedy(model, prompt, steps):
    ids = prompt.clone()
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def generate(model, prompt, **kwargs):
    return model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=50, do_sample=False, pad_token_id=0, **kwargs
    )


PROMPT = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))


def test_cached_generate_matches_full_recomputation_across_scale_changes(clex_model):
    # 10 + 50 tokens: t goes 1 -> 2 -> 3 -> 4 (crosses 16, 32 and 48)
    out = generate(clex_model, PROMPT, return_dict_in_generate=True)
    ref = full_recompute_greedy(clex_model, PROMPT, 50)
    assert len(set(ref[0, 10:].tolist())) > 10  # a real sequence, not one repeated token
    assert torch.equal(out.sequences, ref)
    # generate carried on with the cache the hook put in, and it refilled once per scale change.
    cache = next(v for v in out.values() if isinstance(v, transformers.cache_utils.Cache))
    assert isinstance(cache, CLEXCache)
    assert cache.refills == 3


def test_a_cache_passed_to_generate_counts_one_refill_per_scale_change(clex_model):
    cache = CLEXCache(config=clex_model.config)
    out = generate(clex_model, PROMPT, **{cache_argument(clex_model): cache})
    assert torch.equal(out, full_recompute_greedy(clex_model, PROMPT, 50))
    assert cache.refills == 3
    assert cache.get_seq_length() == 59  # the last token is generated, never fed back
    assert torch.equal(cache.history_ids, out[:, :59])


def test_without_the_refresh_the_cache_goes_stale(clex_model):
    """The tests above have teeth: a plain cache gives other tokens once t changes."""
    clex_model.model._clexlab_generation_hook.remove()
    out = generate(clex_model, PROMPT)
    ref = full_recompute_greedy(clex_model, PROMPT, 50)
    assert torch.equal(out[:, : L + 1], ref[:, : L + 1])  # identical while t = 1
    assert not torch.equal(out, ref)


def test_step_by_step_with_a_plain_cache_is_exact(clex_model):
    """A user's own DynamicCache, fed one token at a time by hand, across a scale change."""
    cache = DynamicCache(config=clex_model.config)
    ids = PROMPT[:, :14]
    name = cache_argument(clex_model)
    with torch.no_grad():
        out = clex_model(input_ids=ids, use_cache=True, **{name: cache})
        for step in range(6):  # positions 14..19: t moves from 1 to 2 at position 16
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            out = clex_model(input_ids=nxt, use_cache=True, **{name: cache})
            full = clex_model(ids, use_cache=False).logits[:, -1]
            torch.testing.assert_close(out.logits[:, -1], full, rtol=1e-4, atol=1e-4)


def test_beam_reordering_reorders_the_kept_history(clex_model):
    cache = CLEXCache(config=clex_model.config)
    ids = torch.randint(0, 64, (3, 5))
    with torch.no_grad():
        clex_model(input_ids=ids, use_cache=True, **{cache_argument(clex_model): cache})
    cache.reorder_cache(torch.tensor([2, 0, 1]))
    assert torch.equal(cache.history_ids, ids[[2, 0, 1]])


def test_beam_search_runs_and_follows_scale_changes(clex_model):
    out = generate(clex_model, PROMPT[:1], num_beams=3, return_dict_in_generate=True)
    cache = next(v for v in out.values() if isinstance(v, transformers.cache_utils.Cache))
    assert isinstance(cache, CLEXCache) and cache.refills == 3
    assert out.sequences.shape == (1, 60)


def test_a_non_empty_foreign_cache_is_refused(clex_model):
    name = cache_argument(clex_model)
    clex_model.model._clexlab_generation_hook.remove()
    cache = DynamicCache(config=clex_model.config)
    with torch.no_grad():
        clex_model(input_ids=PROMPT, use_cache=True, **{name: cache})  # filled without clexlab's hook
    from clexlab.rope.generation import enable_cached_generation

    clex_model.model._clexlab_generation_hook = None
    enable_cached_generation(clex_model)
    with pytest.raises(RuntimeError, match="non-empty cache it did not fill"):
        with torch.no_grad():
            clex_model(input_ids=PROMPT[:, :1], use_cache=True, **{name: cache})


def test_an_unknown_cache_argument_fails_at_install():
    class Backbone(torch.nn.Module):
        def forward(self, input_ids, kv_state=None):
            return input_ids

    with pytest.raises(RuntimeError, match="takes none of"):
        cache_argument(Backbone())
