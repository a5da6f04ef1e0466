"""Greedy decoding with the KV cache equals decoding by full recomputation under CLEX."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from clexlab.rope import install_clex

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
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def test_cached_generate_matches_full_recomputation_across_scale_changes(clex_model):
    prompt = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    # 10 + 50 tokens: t goes 1 -> 2 -> 3 -> 4 (crosses 16, 32 and 48)
    out = clex_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=50, do_sample=False, pad_token_id=0)
    ref = full_recompute_greedy(clex_model, prompt, 50)
    assert len(set(ref[0, 10:].tolist())) > 10  # a real sequence, not one repeated token
    assert torch.equal(out, ref)


def test_without_the_refresh_the_cache_goes_stale(clex_model):
    """The test above has teeth: a plain cache gives other tokens once t changes."""
    prompt = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    clex_model.model._clexlab_generation_hook.remove()
    out = clex_model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=50, do_sample=False, pad_token_id=0)
    ref = full_recompute_greedy(clex_model, prompt, 50)
    assert torch.equal(out[:, : L + 1], ref[:, : L + 1])  # identical while t = 1
    assert not torch.equal(out, ref)


def test_beam_reordering_reorders_the_kept_history(clex_model):
    from transformers import DynamicCache

    cache = DynamicCache(config=clex_model.config)
    ids = torch.randint(0, 64, (3, 5))
    with torch.no_grad():
        clex_model(input_ids=ids, past_key_values=cache, use_cache=True)
    cache.reorder_cache(torch.tensor([2, 0, 1]))
    assert torch.equal(cache._clexlab_history["ids"], ids[[2, 0, 1]])
