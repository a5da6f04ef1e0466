"""The curriculum inside LongContextLM: labels per curriculum, continuous t through CLEX's solver."""

import torch

from tests.conftest import TINY_CLEX, TINY_MODEL, TINY_OPTIM

POSE = {"_target_": "clexlab.curriculum.ChunkedPositionCurriculum", "chunks": 2, "keep_ends": False}
CONTINUOUS = {"_target_": "clexlab.curriculum.RandomPositionCurriculum", "continuous": True}


def _module(rope="clex", curriculum=None, **train):
    from clexlab.models import LongContextLM

    torch.manual_seed(0)
    return LongContextLM(model=dict(TINY_MODEL), rope=rope, clex=dict(TINY_CLEX), optim=dict(TINY_OPTIM), vocab_size=257,
                         curriculum=curriculum, train=train)


def test_labels_name_the_curriculum_except_the_papers():
    assert _module().method == "clex"
    assert _module(curriculum=POSE).method == "clex+pose2"
    assert _module(rope="none", curriculum=POSE).method == "none"  # contiguous training: no curriculum at all
    assert _module(rope="none", curriculum=POSE, position_sampling=True).method == "none+pos+pose2"


def test_continuous_t_trains_the_ode_at_a_real_scale():
    module = _module(curriculum=CONTINUOUS).train()
    draw = next(d for d in (module.curriculum.sample(s, 32) for s in range(10)) if isinstance(d.t, float))
    ids = torch.randint(0, 257, (2, 32))
    positions = draw.positions.unsqueeze(0).expand_as(ids)
    with module.rope_method.scale(module.model, draw.t):
        nll, count = module._nll(ids, ids, positions)
    (nll / count).backward()
    grads = [p.grad for p in module.rope_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert int(draw.positions[-1]) == round(32 * draw.t) - 1
