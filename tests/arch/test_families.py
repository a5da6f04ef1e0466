"""Every supported model family through clexlab: the test matrix of the any-RoPE-model work.

For each family (tiny models built from transformers' own config classes):
installing CLEX or any baseline at factor 1 leaves the logits unchanged; a
training step reaches the CLEX ODE (the fused angle gradient equal to plain
autograd); ``eval.py model.path=<saved dir>`` writes results; greedy
generation with the cache equals full recomputation across scale changes; and
the released CLEX format round-trips through export and load.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from clexlab.arch import get_architecture, supported
from clexlab.models.builder import build_tiny
from clexlab.models.official_clex import export_official_clex, load_official_clex
from clexlab.rope import CLEXRotaryEmbedding, find_rotary, install_clex, method_from_config
from clexlab.rope.methods import methods

L, VOCAB = 16, 64
SIZES = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 96,
         "train_length": L, "rope_theta": 10000.0}
FAMILIES = supported()


def tiny(arch: str, seed: int = 0, sharp: bool = False, vocab: int = VOCAB, **extra):
    torch.manual_seed(seed)
    model = build_tiny({**SIZES, "arch": arch, **extra}, vocab).eval()
    if sharp:  # sharper than the default init, so greedy tokens vary
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim >= 2:
                    p.normal_(0, 0.3)
    return model


def logits(model, n: int) -> torch.Tensor:
    ids = (torch.arange(n).remainder(VOCAB - 3) + 2)[None]
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def trained_looking(rope: CLEXRotaryEmbedding) -> CLEXRotaryEmbedding:
    with torch.no_grad():
        rope.dynamics.down_proj.normal_(0, 0.3)
    return rope


def test_every_family_is_supported_and_others_are_refused_in_one_line():
    assert set(FAMILIES) >= {"llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "phi", "phi3", "gpt_neox", "gemma", "gemma2"}
    from clexlab.utils.errors import UserError

    with pytest.raises(UserError, match="'bert' is not supported by clexlab; supported: gemma, gemma2"):
        get_architecture("bert")


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("method", sorted(methods()))
def test_installing_a_method_at_factor_one_leaves_the_logits(arch, method):
    model = tiny(arch)
    want = logits(model, L)
    rope = method_from_config({"name": method, "factor": 1.0}, {"clex": {"max_scale": 4}})
    rotary = rope.install(model, L)
    # Bit for bit where the model's own rotary module stays (none); float32 rounding of the
    # frequencies otherwise (CLEX starts from plain RoPE's formula in float64).
    exact = method == "none"
    assert_close(logits(model, L), want, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5)
    if method == "clex":
        assert rotary.head_dim == get_architecture(arch).rotary_dim(model.config)


@pytest.mark.parametrize(
    "arch, rope_parameters",
    [
        ("llama", {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8}),
        ("qwen2", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 8}),
        ("phi3", {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0 + i / 10 for i in range(8)],
                  "long_factor": [2.0] * 8, "original_max_position_embeddings": L}),
    ],
    ids=["llama3.1-style", "qwen2.5-yarn", "phi3-longrope"],
)
def test_clex_on_a_scaled_model_starts_from_its_own_rope(arch, rope_parameters):
    extra = {"config_overrides": {"original_max_position_embeddings": L}} if arch == "phi3" else {}
    model = tiny(arch, rope_parameters=rope_parameters, **extra)
    want = logits(model, L)
    rope = install_clex(model, train_length=L, max_scale=4)
    assert rope.own.rope_type == rope_parameters["rope_type"]
    assert_close(logits(model, L), want, rtol=1e-5, atol=1e-5)
    # and it does move them beyond L, once the ODE is trained-looking
    trained_looking(rope)
    assert (logits(model, 3 * L) - logits(tiny(arch, rope_parameters=rope_parameters, **extra), 3 * L)).abs().max() > 1e-3


@pytest.mark.parametrize("arch", FAMILIES)
def test_a_training_step_reaches_the_ode_and_the_fused_gradient_is_autograds(arch):
    grads = {}
    for fused in (True, False):
        model = tiny(arch).train()
        rope = trained_looking(install_clex(model, train_length=L, max_scale=4))
        if fused:
            assert rope.fused_rotary, f"{arch}: the attention does not take the fused angle gradient"
        rope.fused_rotary = fused
        ids = torch.randint(0, VOCAB, (2, L), generator=torch.Generator().manual_seed(1))
        positions = torch.sort(torch.randperm(3 * L, generator=torch.Generator().manual_seed(2))[:L]).values
        with rope.use_scale(3):
            out = model(input_ids=ids, position_ids=positions[None].expand(2, -1), attention_mask=torch.ones_like(ids))
        out.logits.float().logsumexp(-1).mean().backward()
        grads[fused] = torch.cat([p.grad.flatten() for p in rope.dynamics.parameters()])
    assert grads[True].abs().sum() > 0 and torch.isfinite(grads[True]).all()
    assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", FAMILIES)
def test_cached_generation_is_exact_across_scale_changes(arch):
    # Untied head: with Gemma's tied (and sqrt(hidden)-scaled) embeddings a random model repeats its last token.
    model = tiny(arch, seed=1, sharp=True, tie_word_embeddings=False)
    trained_looking(install_clex(model, train_length=L, max_scale=4))
    model.generation_config.eos_token_id = None
    prompt = torch.randint(2, VOCAB, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=40, do_sample=False, pad_token_id=0)
        ref = prompt
        for _ in range(40):  # t goes 1 -> 2 -> 3 (positions 16 and 32)
            ref = torch.cat([ref, model(ref, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert len(set(ref[0, 6:].tolist())) > 4, "a degenerate sequence would not test anything"
    assert torch.equal(out, ref)


@pytest.mark.parametrize("arch", FAMILIES)
def test_export_and_load_round_trip(arch, tmp_path):
    model = tiny(arch, seed=2)
    rope = trained_looking(install_clex(model, train_length=L, max_scale=4))
    out = export_official_clex(model, tmp_path / arch, byte_tokenizer=True)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == arch and config["rope_scaling"]["type"] == "clex"
    loaded, info = load_official_clex(out)
    new = find_rotary(loaded)
    assert isinstance(new, CLEXRotaryEmbedding) and info["model_type"] == arch
    assert torch.equal(new.frequency_table(), rope.frequency_table())
    for n in (L, 3 * L):
        assert_close(logits(loaded, n), logits(model, n), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", FAMILIES)
def test_eval_py_scores_a_saved_directory_of_every_family(arch, tmp_path, compose_train):
    from clexlab.workflows.evaluate import evaluate

    directory = tmp_path / arch
    tiny(arch, vocab=257).save_pretrained(directory)  # the byte tokenizer's vocabulary
    cfg = compose_train(
        f"model.path={directory}", "model.tokenizer=bytes", "eval.lengths=[16,32]", "eval.max_tokens=64",
        "eval.tasks=[ppl]", "eval.batch_size=2", config_name="eval",
    )
    payload = evaluate(cfg)
    assert set(payload["ppl"]) == {"16", "32"} and all(v > 1 for v in payload["ppl"].values())
    assert json.loads((tmp_path / "run" / "results.json").read_text())["rope"] == "default"
