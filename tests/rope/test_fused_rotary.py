"""The fused angle gradient against autograd through transformers' own rotary application."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama import modeling_llama

from clexlab.models.loss import causal_lm_nll
from clexlab.rope.fused_rotary import RotaryAngleGrad, apply_rotary_pos_emb, patch_rotary_application, tag_angles
from tests.conftest import TINY_CLEX, TINY_MODEL, TINY_OPTIM


def _original():
    fn = modeling_llama.apply_rotary_pos_emb
    return getattr(fn, "_clex_original", fn)


def _tables(angles, scale, batch):
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos() * scale, emb.sin() * scale
    return cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)


@pytest.mark.parametrize("shared_rows", [True, False])
@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_matches_autograd_through_transformers(shared_rows, kv_heads, scale):
    """Values and gradients (q, k, angles) equal the library path, in float64."""
    torch.manual_seed(0)
    batch, heads, n, d = 3, 4, 7, 8
    # SDPA's layout: [batch, seq, heads, d] transposed to [batch, heads, seq, d].
    q = torch.randn(batch, n, heads, d, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k = torch.randn(batch, n, kv_heads, d, dtype=torch.float64).transpose(1, 2).requires_grad_()
    angles = (torch.rand(1 if shared_rows else batch, n, d // 2, dtype=torch.float64) * 20).requires_grad_()
    gq, gk = torch.randn_like(q), torch.randn_like(k)

    ref = _original()(q, k, *_tables(angles, scale, batch))
    ref_grads = torch.autograd.grad(ref, (q, k, angles), (gq, gk))
    cos, sin = _tables(angles.detach(), scale, batch)
    out = RotaryAngleGrad.apply(q, k, cos, sin, angles)
    grads = torch.autograd.grad(out, (q, k, angles), (gq, gk))
    for got, want in zip((*out, *grads), (*ref, *ref_grads)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_gradcheck():
    torch.manual_seed(1)
    q = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 1, 5, 4, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(1, 5, 2, dtype=torch.float64, requires_grad=True)

    def fn(q, k, angles):
        cos, sin = _tables(angles.detach(), 1.0, 2)
        return RotaryAngleGrad.apply(q, k, cos, sin, angles)

    # detach() inside fn hides cos/sin from gradcheck: the angle gradient must come from the Function.
    assert torch.autograd.gradcheck(fn, (q, k, angles))


def test_untagged_calls_go_to_the_original():
    calls = []

    def original(q, k, cos, sin, unsqueeze_dim=1):
        calls.append(unsqueeze_dim)
        return q, k

    q = k = torch.randn(1, 1, 2, 4)
    cos = sin = torch.ones(1, 2, 4)
    assert apply_rotary_pos_emb(q, k, cos, sin, 1, _original=original) == (q, k)
    tag_angles(cos, torch.zeros(1, 2, 2, requires_grad=True))
    with torch.no_grad():  # tagged, but nothing to differentiate: the library path too
        apply_rotary_pos_emb(q, k, cos, sin, 1, _original=original)
    assert calls == [1, 1]


def test_tables_that_never_reach_the_fused_path_are_an_error():
    """A copy of the tagged cos (no tag) would leave the ODE without gradient: the next forward says so."""
    from clexlab.rope.clex import CLEXRotaryEmbedding

    rope = CLEXRotaryEmbedding(head_dim=8, base=10000.0, train_length=4, max_scale=4).train()
    rope.fused_rotary = True
    x, positions = torch.zeros(2, 6, 8), torch.arange(6)[None].expand(2, -1)
    q = k = torch.randn(2, 1, 6, 8)
    with rope.use_scale(3):
        cos, sin = rope(x, positions)
        apply_rotary_pos_emb(q, k, cos, sin, 1, _original=_original())  # consumed: fine
        cos, sin = rope(x, positions)
        apply_rotary_pos_emb(q, k, cos.clone(), sin, 1, _original=_original())  # a copy: the tag is lost
        with pytest.raises(RuntimeError, match="reached no attention layer"):
            rope(x, positions)


def _module(**model):
    from clexlab.models import LongContextLM

    torch.manual_seed(0)
    return LongContextLM(model={**TINY_MODEL, **model}, rope="clex", clex=dict(TINY_CLEX), optim=dict(TINY_OPTIM), vocab_size=257)


def _step_grads(module, fused: bool, t: int):
    rope = module.clex_rope
    rope.fused_rotary = fused
    module.zero_grad(set_to_none=True)
    ids = torch.randint(0, 257, (3, 32), generator=torch.Generator().manual_seed(2))
    draw = module.curriculum.sample(5, ids.shape[1])
    positions = draw.positions.unsqueeze(0).expand_as(ids)
    with rope.use_scale(t):
        nll, count = causal_lm_nll(module.model, ids, ids, positions)
    (nll / count).backward()
    return nll.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_training_step_equals_the_library_path(gradient_checkpointing):
    """A whole CLEX step: same loss and gradients (ODE weights included) with and without fusion."""
    module = _module(num_kv_heads=2, gradient_checkpointing=gradient_checkpointing).train()
    assert module.clex_rope.fused_rotary  # install_clex patched Llama's attention
    assert getattr(modeling_llama.apply_rotary_pos_emb, "_clex_original", None) is not None
    loss_ref, ref = _step_grads(module, fused=False, t=3)
    loss, got = _step_grads(module, fused=True, t=3)
    assert torch.equal(loss, loss_ref)
    assert ref.keys() == got.keys() and any(".rotary_emb." in name for name in got)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-7, msg=name)
    _, at_one = _step_grads(module, fused=True, t=1)  # t = 1: plain frequencies, no ODE gradient
    assert not any(".rotary_emb." in name for name in at_one)


def test_patch_is_idempotent_and_reports_unknown_models():
    module = _module()
    patched = modeling_llama.apply_rotary_pos_emb
    assert patch_rotary_application(module.model) and modeling_llama.apply_rotary_pos_emb is patched
    assert not patch_rotary_application(torch.nn.Linear(2, 2))  # no attention modules: not fused


def test_an_attention_that_does_not_call_the_global_is_left_alone():
    """Library drift: an attention class whose forward rotates some other way keeps plain autograd."""
    from clexlab.rope.fused_rotary import _calls_global

    class OwnRotation(modeling_llama.LlamaAttention):
        def forward(self, hidden_states, position_embeddings, attention_mask=None, **kwargs):
            return super().forward(hidden_states, position_embeddings, attention_mask, **kwargs)

    assert _calls_global(modeling_llama.LlamaAttention, "apply_rotary_pos_emb")
    assert not _calls_global(OwnRotation, "apply_rotary_pos_emb")
    module = _module()
    layer = module.model.model.layers[0]
    own = OwnRotation(module.model.config, 0)
    own.load_state_dict(layer.self_attn.state_dict())
    layer.self_attn = own
    assert not patch_rotary_application(module.model)
