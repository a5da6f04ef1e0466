import math

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from clexlab.rope import CLEXRotaryEmbedding


def make(head_dim=32, base=10000.0, L=64, t_max=8, **kw):
    torch.manual_seed(0)
    return CLEXRotaryEmbedding(head_dim=head_dim, base=base, train_length=L, max_scale=t_max, time_dt=0.05, **kw)


def llama_config(head_dim, base, L, rope_parameters=None):
    return LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        max_position_embeddings=L,
        rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": base},
    )


@pytest.mark.parametrize("head_dim,base", [(32, 10000.0), (64, 500000.0)])
def test_scale_one_equals_transformers_llama_rope(head_dim, base):
    rope = make(head_dim, base)
    ref = LlamaRotaryEmbedding(llama_config(head_dim, base, 64))
    x = torch.randn(2, 64, head_dim)
    pos = torch.arange(64).unsqueeze(0).expand(2, -1)
    for got, want in zip(rope(x, pos), ref(x, pos)):
        assert_close(got, want)


@pytest.mark.parametrize("t", [2, 3, 5, 8])
def test_untrained_clex_is_ntk_with_alpha_2t_minus_1(t):
    """transformers' dynamic NTK with factor 2 at length t*L uses alpha = 2t-1: an independent reference."""
    head_dim, base, L = 32, 10000.0, 64
    rope = make(head_dim, base, L).eval()
    config = llama_config(head_dim, base, L, {"rope_type": "dynamic", "factor": 2.0, "rope_theta": base})
    want, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, "cpu", seq_len=t * L)
    assert_close(rope.log_inv_freq(t).exp(), want.float(), rtol=2e-5, atol=1e-7)
    # and the module uses it for a t*L-long input
    pos = torch.arange(t * L).unsqueeze(0)
    cos, _ = rope(torch.zeros(1, t * L, head_dim), pos)
    assert_close(cos[0, :, : head_dim // 2], torch.cos(pos[0, :, None].float() * want.float()), rtol=1e-4, atol=1e-4)


def test_eval_scale_is_ceil_length_over_L_clipped():
    rope = make(L=64, t_max=4)
    assert [rope.scale_for_length(n) for n in (1, 64, 65, 128, 129, 256, 257, 10_000)] == [1, 1, 2, 2, 3, 4, 4, 4]


def test_gradients_reach_both_ode_weights_for_t_above_one():
    rope = make().train()
    with torch.no_grad():
        rope.dynamics.down_proj.normal_(0, 0.1)
    pos = torch.arange(0, 64 * 4, 4).unsqueeze(0)
    with rope.use_scale(4):
        cos, sin = rope(torch.zeros(1, 64, 32), pos)
    (cos * torch.randn_like(cos)).sum().add((sin * torch.randn_like(sin)).sum()).backward()
    for p in (rope.dynamics.up_proj, rope.dynamics.down_proj):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_zero_init_down_proj_still_gets_gradient():
    # W_down = 0 at init: its gradient is what lets training move away from NTK.
    rope = make().train()
    with rope.use_scale(3):
        cos, _ = rope(torch.zeros(1, 8, 32), torch.arange(0, 190, 24).unsqueeze(0))
    cos.sum().backward()
    assert rope.dynamics.down_proj.grad.abs().sum() > 0


def test_t_one_needs_no_solve_and_no_ode_in_graph():
    rope = make().train()
    cos, _ = rope(torch.zeros(1, 8, 32), torch.arange(8).unsqueeze(0))
    assert not cos.requires_grad


def test_table_cached_until_weights_change():
    rope = make().eval()
    first = rope.frequency_table()
    assert rope.frequency_table() is first  # reused
    opt = torch.optim.SGD(rope.parameters(), lr=0.1)
    rope.dynamics.down_proj.grad = torch.ones_like(rope.dynamics.down_proj)
    opt.step()  # in-place update bumps the version counter
    second = rope.frequency_table()
    assert second is not first
    assert not torch.allclose(first[3], second[3])
    assert_close(first[0], second[0])  # t = 1 never moves


def test_use_scale_rejects_out_of_range():
    rope = make(t_max=4)
    with pytest.raises(ValueError):
        with rope.use_scale(5):
            pass


def test_training_and_table_agree_at_integer_t():
    rope = make()
    with torch.no_grad():
        rope.dynamics.down_proj.normal_(0, 0.1)
    rope.train()
    trained = torch.stack([rope.log_inv_freq(t) for t in range(1, 9)]).detach()
    rope.eval()
    assert_close(rope.frequency_table(), trained, atol=1e-5, rtol=1e-5)
    assert math.isclose(float(trained[0, 0]), 0.0, abs_tol=1e-7)  # inv_freq[0] = 1


def test_log_scale_multiplies_queries_by_log_n_over_log_L():
    from transformers import LlamaForCausalLM

    from clexlab.rope.log_scale import enable_log_scale

    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=16, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 50, (1, 48))
    plain_L, plain_3L = model(ids[:, :16]).logits, model(ids).logits
    enable_log_scale(model, train_length=16)
    with torch.no_grad():
        assert_close(model(ids[:, :16]).logits, plain_L)  # factor 1 at the training length
        scaled = model(ids).logits
        assert not torch.allclose(scaled, plain_3L)
        # the same as raising every layer's softmax scale by log(48)/log(16)
        model.set_attn_implementation("sdpa")
        for layer in model.model.layers:
            layer.self_attn.scaling *= math.log(48) / math.log(16)
        assert_close(model(ids).logits, scaled, rtol=1e-5, atol=1e-5)


def test_fast_and_reference_solvers_give_the_same_module_outputs():
    """The default fast path against the paper's torchdiffeq rk4 at dt 0.01, through the module."""
    fast = make(head_dim=64, t_max=6)
    ref = make(head_dim=64, t_max=6, solver="rk4")
    ref.time_dt = 0.01
    with torch.no_grad():
        # Moderate weights: with std 0.1 some learned frequencies reach ~17 rad/token and
        # cos(p*w) at p ~ 400 turns a 1e-5 frequency difference into a different gradient.
        fast.dynamics.down_proj.normal_(0, 0.03)
    ref.load_state_dict(fast.state_dict())
    fast.eval(), ref.eval()
    assert_close(fast.frequency_table(), ref.frequency_table(), atol=1e-4, rtol=0)
    fast.train(), ref.train()
    pos = torch.arange(0, 6 * 64, 6).unsqueeze(0)
    with fast.use_scale(6), ref.use_scale(6):
        for a, b in zip(fast(torch.zeros(1, 64, 64), pos), ref(torch.zeros(1, 64, 64), pos)):
            # a log-frequency gap below 1e-4 becomes a phase gap of up to p * w * 1e-4 ~ 0.04 at p ~ 400
            assert_close(a, b, atol=1e-2, rtol=0)
    cotangent = torch.randn(32)
    grads = []
    for rope in (fast, ref):
        (rope.log_inv_freq(6) * cotangent).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in rope.dynamics.parameters()]))
    assert ((grads[0] - grads[1]).norm() / grads[1].norm()) < 1e-3


def test_eval_cos_sin_reused_across_batches_and_refreshed_when_needed():
    rope = make(L=16, t_max=4).eval()
    pos = torch.arange(40).unsqueeze(0).expand(3, -1)
    x = torch.zeros(3, 40, 32)
    with torch.no_grad():
        cos1, sin1 = rope(x, pos)
        cos2, _ = rope(x, pos)
        assert cos2.data_ptr() == cos1.data_ptr()  # same storage: reused, not recomputed
        shifted = pos + 1
        cos3, _ = rope(x, shifted)  # other positions: recomputed, right values
    with torch.enable_grad():
        want, _ = rope._cos_sin(rope.current_scale(shifted), shifted, x.dtype)
        fresh, _ = rope(x, pos)
    assert_close(cos3, want)
    assert_close(fresh, cos1)
    ragged = pos.clone()
    ragged[1] = torch.arange(1, 41)
    with torch.no_grad():
        cos4, _ = rope(x, ragged)  # rows differ: computed per row
    assert_close(cos4[1], want[1])
    assert_close(cos4[0], cos1[0])
