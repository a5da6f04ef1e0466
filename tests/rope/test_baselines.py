import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from clexlab.rope.baselines import BASELINES, install_baseline, rope_parameters_for

L = 32


def tiny():
    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=L, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("method", BASELINES)
def test_factor_one_equals_plain_rope(method):
    model = tiny()
    plain = model.model.rotary_emb
    x = torch.zeros(1, 4 * L, 16)
    # dynamic NTK keeps adapting beyond L by design, so it is compared up to L
    n = L if method == "dynamic_ntk" else 4 * L
    pos = torch.arange(n).unsqueeze(0)
    want = plain(x[:, :n], pos)
    got = install_baseline(model, method, L, factor=1.0)(x[:, :n], pos)
    for a, b in zip(got, want):
        assert_close(a, b)
    ids = torch.randint(0, 64, (1, n))
    reference = tiny()
    with torch.no_grad():
        assert_close(model(ids).logits, reference(ids).logits)


def test_pi_divides_frequencies_by_factor():
    model = tiny()
    base_inv = model.model.rotary_emb.inv_freq.clone()
    assert_close(install_baseline(model, "pi", L, factor=8.0).inv_freq, base_inv / 8)


def test_ntk_raises_the_base_like_the_ntk_formula():
    model = tiny()
    rotary = install_baseline(model, "ntk", L, factor=4.0)
    d = 16
    want = 1.0 / (10000.0 * 4.0 ** (d / (d - 2))) ** (torch.arange(0, d, 2).float() / d)
    assert_close(rotary.inv_freq, want)
    # installing again starts from the pretrained base, not the raised one
    assert_close(install_baseline(model, "ntk", L, factor=4.0).inv_freq, want)


def test_yarn_uses_transformers_yarn_with_original_length_L():
    model = tiny()
    rotary = install_baseline(model, "yarn", L, factor=8.0, beta_fast=32, beta_slow=1)
    inv, scale = ROPE_INIT_FUNCTIONS["yarn"](model.config, "cpu")
    assert_close(rotary.inv_freq, inv)
    assert scale == pytest.approx(0.1 * torch.log(torch.tensor(8.0)).item() + 1)
    assert model.config.rope_parameters["original_max_position_embeddings"] == L


def test_dynamic_ntk_factor_two_at_tL_is_clex_untrained_schedule():
    from clexlab.rope import CLEXRotaryEmbedding

    model = tiny()
    rotary = install_baseline(model, "dynamic_ntk", L, factor=2.0)
    clex = CLEXRotaryEmbedding(head_dim=16, base=10000.0, train_length=L, max_scale=4).eval()
    x = torch.zeros(1, 3 * L, 16)
    pos = torch.arange(3 * L).unsqueeze(0)
    for a, b in zip(rotary(x, pos), clex(x, pos)):
        assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bad_method_and_factor():
    with pytest.raises(ValueError):
        rope_parameters_for("alibi", 10000.0, 16, L)
    with pytest.raises(ValueError):
        rope_parameters_for("pi", 10000.0, 16, L, factor=0.5)
