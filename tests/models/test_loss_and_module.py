import pytest
import torch
from torch.testing import assert_close

from clexlab.models.loss import causal_lm_nll, chunked_nll
from clexlab.models import LongContextLM
from clexlab.rope import CLEXRotaryEmbedding
from tests.conftest import TINY_CLEX, TINY_MODEL, TINY_OPTIM


def test_chunked_nll_equals_transformers_loss(tiny_module):
    model = tiny_module.model.eval()
    ids = torch.randint(0, 257, (2, 33))
    nll, count = causal_lm_nll(model, ids[:, :-1], ids[:, 1:], chunk_size=7)
    ref = model(input_ids=ids[:, :-1], labels=ids[:, :-1]).loss  # HF shifts labels itself
    # HF scores 31 targets per row (labels shifted inside); we score 32 (the next token is given)
    own_31 = causal_lm_nll(model, ids[:, :-1], torch.cat([ids[:, 1:-1], torch.full((2, 1), -100)], 1))
    assert count == 64
    assert_close(own_31[0] / own_31[1], ref, rtol=1e-5, atol=1e-5)


def test_chunked_nll_gradient_matches_unchunked():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50)
    hidden = torch.randn(2, 20, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 20))
    a, _ = chunked_nll(hidden, head, labels, chunk_size=6)
    (ga,) = torch.autograd.grad(a, hidden)
    b = torch.nn.functional.cross_entropy(head(hidden).reshape(-1, 50), labels.reshape(-1), reduction="sum")
    (gb,) = torch.autograd.grad(b, hidden)
    assert_close(a, b)
    assert_close(ga, gb)


def test_module_installs_clex_and_separates_the_ode_learning_rate(tiny_module):
    rope = tiny_module.clex_rope
    assert isinstance(rope, CLEXRotaryEmbedding)
    assert rope.max_scale == 4 and rope.train_length == 32
    names = [n for n, _ in tiny_module.named_parameters() if "rotary_emb" in n]
    assert sorted(names) == ["model.model.rotary_emb.dynamics.down_proj", "model.model.rotary_emb.dynamics.up_proj"]


def test_training_step_uses_the_curriculum_scale_and_sampled_positions(tiny_module, monkeypatch):
    seen = {}
    rope = tiny_module.clex_rope
    original = rope.forward

    def spy(x, position_ids):
        seen["t"] = rope.current_scale(position_ids)
        seen["positions"] = position_ids.clone()
        return original(x, position_ids)

    monkeypatch.setattr(rope, "forward", spy)
    monkeypatch.setattr(tiny_module, "log", lambda *a, **k: None)
    monkeypatch.setattr(tiny_module, "optimizers", lambda: torch.optim.SGD(tiny_module.parameters(), lr=0.1))
    ids = torch.randint(0, 257, (2, 32))
    draw = tiny_module.curriculum.sample(0, 32)
    loss = tiny_module.training_step({"input_ids": ids, "labels": ids}, 0)
    assert seen["t"] == draw.t
    assert torch.equal(seen["positions"][0], draw.positions)
    loss.backward()
    if draw.t > 1:
        assert rope.dynamics.down_proj.grad is not None


def _module(rope, **train):
    return LongContextLM(
        model=dict(TINY_MODEL), rope=rope, clex=dict(TINY_CLEX), optim=dict(TINY_OPTIM), vocab_size=257, train=train
    )



@pytest.mark.parametrize("name", ["none", "pi", "ntk", "dynamic_ntk", "yarn", "clex"])
def test_position_sampling_for_any_method(name):
    module = _module({"name": name, "factor": 4.0}, position_sampling=True, sampling_max_scale=4)
    assert module.position_sampling
    seen_t = set()
    for step in range(30):
        draw = module.curriculum.sample(step, 32)
        p = draw.positions
        seen_t.add(draw.t)
        assert p[0] == 0 and p[-1] == 32 * draw.t - 1
        assert (p[1:] > p[:-1]).all() and p.max() < 32 * draw.t
    assert seen_t == {1, 2, 3, 4}
    assert module.method.endswith("+pos") or name == "clex"


def test_method_defaults_and_labels():
    assert _module("clex").position_sampling and _module("clex").method == "clex"
    assert not _module({"name": "yarn", "factor": 8.0}).position_sampling
    assert _module({"name": "yarn", "factor": 8.0}).method == "yarn-x8"
    clex_contiguous = _module("clex", position_sampling=False)
    assert clex_contiguous.method == "clex-contiguous"
    assert torch.equal(clex_contiguous.curriculum.sample(3, 16).positions, torch.arange(16))


def test_frozen_ode_has_no_trainable_ode_weights():
    module = LongContextLM(
        model=dict(TINY_MODEL), rope="clex", clex={**TINY_CLEX, "freeze": True}, optim=dict(TINY_OPTIM), vocab_size=257
    )
    assert module.method == "clex-frozen"
    assert not any(p.requires_grad for p in module.clex_rope.dynamics.parameters())
