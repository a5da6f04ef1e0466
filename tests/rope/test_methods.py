"""The RoPE methods as objects: each baseline against transformers' own rope init functions, the model's
own scaled RoPE kept at factor 1, and one-line refusals of bad options."""

import copy

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from clexlab.rope import CLEXRotaryEmbedding, find_rotary, method_from_config, own_rope
from clexlab.rope.methods import methods
from clexlab.utils.errors import UserError

L = 32
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8}
YARN = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 8}


def tiny(rope_parameters=None):
    config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=L, rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10000.0},
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def library(rope_type, **params):
    """transformers' own frequencies for plain RoPE scaled by ``rope_type`` with original length L."""
    config = copy.deepcopy(tiny().config)
    config.rope_parameters = {"rope_theta": 10000.0, "rope_type": rope_type, **params}
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")


def logits(model, n):
    ids = torch.arange(n).remainder(60)[None] + 2
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("name", sorted(set(methods()) - {"clex"}))
@pytest.mark.parametrize("own", [None, LLAMA3, YARN], ids=["default", "llama3", "yarn"])
def test_factor_one_leaves_the_model_as_it_is(name, own):
    model = tiny(own)
    want = logits(model, L)
    method_from_config({"name": name, "factor": 1.0}).install(model, L)
    assert_close(logits(model, L), want)


def test_pi_is_transformers_linear():
    model = tiny()
    rotary = method_from_config({"name": "pi", "factor": 8.0}).install(model, L)
    inv, scale = library("linear", factor=8.0)
    assert_close(rotary.inv_freq, inv) and scale == rotary.attention_scaling


def test_ntk_is_plain_rope_with_the_raised_base():
    model = tiny()
    rotary = method_from_config({"name": "ntk", "factor": 4.0}).install(model, L)
    d = 16
    assert_close(rotary.inv_freq, 1.0 / (10000.0 * 4.0 ** (d / (d - 2))) ** (torch.arange(0, d, 2).float() / d))
    # installing again starts from the model's own RoPE, not from the raised base
    assert_close(method_from_config({"name": "ntk", "factor": 4.0}).install(model, L).inv_freq, rotary.inv_freq)


def test_yarn_is_transformers_yarn_with_original_length_L():
    model = tiny()
    rotary = method_from_config({"name": "yarn", "factor": 8.0, "beta_fast": 32, "beta_slow": 1}).install(model, L)
    inv, scale = library("yarn", factor=8.0, original_max_position_embeddings=L, beta_fast=32, beta_slow=1)
    assert_close(rotary.inv_freq, inv)
    assert rotary.attention_scaling == pytest.approx(scale)
    x, pos = torch.zeros(1, 2 * L, 16), torch.arange(2 * L)[None]
    cos, _ = rotary(x, pos)
    assert_close(cos[0, 5], torch.cat([5 * inv, 5 * inv]).cos() * scale)


def test_llama3_is_transformers_llama3_with_original_length_L():
    model = tiny()
    rotary = method_from_config({"name": "llama3", "factor": 8.0}).install(model, L)
    inv, _ = library("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=L)
    assert_close(rotary.inv_freq, inv)


@pytest.mark.parametrize("length", [L, 2 * L, 3 * L + 5])
def test_dynamic_ntk_is_transformers_dynamic_at_each_length(length):
    model = tiny()
    rotary = method_from_config({"name": "dynamic_ntk", "factor": 2.0}).install(model, L)
    config = copy.deepcopy(model.config)
    config.rope_parameters = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    inv, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, "cpu", seq_len=length)
    assert_close(rotary.inv_freq_for_length(length), inv)


def test_dynamic_ntk_forgets_a_longer_forward():
    """Each forward's frequencies follow its own length: a step at L after a validation at 8 x L is plain RoPE.

    transformers' ``dynamic`` rope type keeps the frequencies a longer forward grew until a forward
    *shorter* than L, so training at exactly L after a long validation ran with scaled frequencies.
    """
    model = tiny()
    method_from_config({"name": "dynamic_ntk", "factor": 2.0}).install(model, L)
    fresh = logits(model, L)
    logits(model, 8 * L)
    assert_close(logits(model, L), fresh, atol=0, rtol=0)


def test_dynamic_ntk_factor_two_is_the_untrained_clex_schedule():
    model = tiny()
    rotary = method_from_config({"name": "dynamic_ntk", "factor": 2.0}).install(model, L)
    clex = CLEXRotaryEmbedding(head_dim=16, base=10000.0, train_length=L, max_scale=4).eval()
    x, pos = torch.zeros(1, 3 * L, 16), torch.arange(3 * L).unsqueeze(0)
    for a, b in zip(rotary(x, pos), clex(x, pos)):
        assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_methods_start_from_the_models_own_scaled_frequencies():
    """Llama-3.1-style model: PI divides *its* frequencies, never base^(-2i/d)."""
    model = tiny(LLAMA3)
    own = own_rope(model)
    assert own.rope_type == "llama3" and not torch.allclose(own.inv_freq, library("linear", factor=1.0)[0])
    rotary = method_from_config({"name": "pi", "factor": 2.0}).install(model, L)
    assert_close(rotary.inv_freq, own.inv_freq / 2)
    assert torch.equal(own_rope(model).inv_freq, own.inv_freq)  # a second install starts from the same place


def test_yarn_on_a_yarn_model_multiplies_its_attention_scaling():
    model = tiny(YARN)
    own = own_rope(model)
    rotary = method_from_config({"name": "yarn", "factor": 2.0}).install(model, L)
    assert rotary.attention_scaling == pytest.approx(own.attention_scaling * (0.1 * torch.log(torch.tensor(2.0)).item() + 1))


def test_none_keeps_the_models_own_module():
    model = tiny(LLAMA3)
    before = find_rotary(model)
    assert method_from_config("none").install(model, L) is before is find_rotary(model)


@pytest.mark.parametrize(
    "rope, match",
    [
        ({"name": "alibi"}, "rope.name must be one of"),
        ({"name": "pi", "factor": 0.5}, "rope.factor must be >= 1"),
        ({"name": "pi", "factor": "big"}, "rope.factor must be a finite number"),
        ({"name": "yarn", "factor": 2.0, "beta_fast": 1, "beta_slow": 32}, "beta_fast must exceed"),
        ({"name": "pi", "factor": 2.0, "beta_fast": 3}, "rope.beta_fast is not an option of rope=pi"),
        ({"_target_": "clexlab.rope.methods.pi.Nope"}, "cannot be imported"),
        ({"_target_": "torch.nn.Linear"}, "is not a RopeMethod"),
        ({"_target_": "clexlab.rope.methods.pi.PositionInterpolation", "name": "yarn"}, "does not match"),
    ],
)
def test_bad_methods_and_options_are_one_line(rope, match):
    with pytest.raises(UserError, match=match):
        method_from_config(rope)


def test_clex_takes_the_clex_node_and_labels_itself():
    method = method_from_config({"name": "clex"}, {"clex": {"max_scale": 4, "freeze": True}})
    assert method.max_scale == 4 and method.label(True) == "clex-frozen" and method.label(False) == "clex-frozen-contiguous"
    with pytest.raises(UserError, match="clex.bogus is not an option of rope=clex"):
        method_from_config({"name": "clex"}, {"clex": {"bogus": 1}})
    assert method_from_config({"name": "yarn", "factor": 16.0}).label(False) == "yarn-x16"
