"""Every option of conf/curriculum/: deterministic per (seed, step), identical on every rank, valid positions."""

import json
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from clexlab.curriculum import curriculum_from_config, span_of
from clexlab.utils.errors import UserError
from tests.conftest import CONF_DIR, ROOT

NAMES = sorted(p.stem for p in (CONF_DIR / "curriculum").glob("*.yaml"))
T_MAX = 16


def _node(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "curriculum" / f"{name}.yaml"))


def _build(name: str, seed: int = 0, **extra):
    return curriculum_from_config(
        {**_node(name), **extra}, max_scale=T_MAX, seed=seed, spread_positions=True, draws_scale=True, continuous_scale=True
    )


def test_the_group_holds_every_documented_option():
    assert set(NAMES) >= {"uniform", "weight_one", "log_uniform", "continuous", "pose", "mixed"}


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), step=st.integers(0, 10**6), seq_len=st.integers(1, 160))
def test_draws_are_a_function_of_seed_and_step(name, seed, step, seq_len):
    # Two "ranks" build their own curriculum; draws in any order, the global RNG disturbed in between.
    rank0, rank1 = _build(name, seed), _build(name, seed)
    a = rank0.sample(step, seq_len)
    torch.manual_seed(step)
    rank1.sample(step + 1, seq_len)
    b = rank1.sample(step, seq_len)
    assert a.t == b.t and torch.equal(a.positions, b.positions)
    # Positions: sorted, distinct, inside [0, round(n t)), contiguous at t = 1.
    p, span = a.positions, span_of(seq_len, a.t)
    assert p.shape == (seq_len,) and p.dtype == torch.long
    assert (p[1:] > p[:-1]).all() and int(p[0]) >= 0 and int(p[-1]) < span
    assert 1 <= a.t <= T_MAX
    if a.t == 1:
        assert torch.equal(p, torch.arange(seq_len))


@pytest.mark.parametrize("name", ["uniform", "weight_one", "log_uniform", "continuous", "mixed"])
def test_random_position_schemes_keep_first_and_last_when_they_spread(name):
    c = _build(name)
    spread = 0
    for step in range(300):
        draw = c.sample(step, 64)
        if int(draw.positions[-1]) == 63:
            continue  # t = 1 or a contiguous step of the mix
        spread += 1
        assert draw.positions[0] == 0 and draw.positions[-1] == span_of(64, draw.t) - 1
    assert spread > 100


def test_seeds_and_steps_change_the_draws():
    for name in NAMES:
        draws = [_build(name, 0).sample(s, 32) for s in range(30)]
        other = [_build(name, 1).sample(s, 32) for s in range(30)]
        assert len({float(d.t) for d in draws}) > 3
        assert [float(d.t) for d in draws] != [float(d.t) for d in other]


def test_draws_match_in_another_process():
    # A fresh interpreter (another rank) with its own global RNG state draws the same.
    code = (
        "import json, sys; from omegaconf import OmegaConf; from clexlab.curriculum import curriculum_from_config\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    node = OmegaConf.to_container(OmegaConf.load(f'conf/curriculum/{name}.yaml'))\n"
        "    c = curriculum_from_config(node, max_scale=16, seed=5, spread_positions=True, draws_scale=True, continuous_scale=True)\n"
        "    out[name] = [[float(d.t), d.positions.tolist()] for d in (c.sample(s, 48) for s in range(20))]\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code, *NAMES], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = json.loads(res.stdout)
    for name in NAMES:
        ours = [[float(d.t), d.positions.tolist()] for d in (_build(name, 5).sample(s, 48) for s in range(20))]
        assert theirs[name] == ours, name


def test_tags_tell_the_options_apart_and_the_default_has_none():
    tags = {name: _build(name).tag() for name in NAMES}
    assert tags["uniform"] == ""
    assert len(set(tags.values())) == len(tags)
    assert _build("pose", p_one=0.25).tag() == "pose2+one0.25"


def test_weight_one_and_mixed_train_contiguously_as_configured():
    one = [_build("weight_one").sample(s, 32).t for s in range(600)]
    assert 0.46 < sum(t == 1 for t in one) / 600 < 0.6  # 0.5 + 0.5 / 16
    mixed = [_build("mixed").sample(s, 32) for s in range(600)]
    contiguous_above_one = [d for d in mixed if d.t > 1 and int(d.positions[-1]) == 31]
    assert 0.4 < len(contiguous_above_one) / sum(d.t > 1 for d in mixed) < 0.6


def test_continuous_t_is_refused_for_a_method_with_integer_scales_only():
    with pytest.raises(UserError, match="curriculum.continuous=true draws non-integer t"):
        curriculum_from_config(_node("continuous"), max_scale=8, seed=0, spread_positions=True, draws_scale=True,
                               continuous_scale=False)
    # A method whose frequencies ignore t (positions only) takes any t: the span is round(n t).
    c = curriculum_from_config(_node("continuous"), max_scale=8, seed=0, spread_positions=True, draws_scale=False)
    assert any(isinstance(c.sample(s, 16).t, float) for s in range(10))


def test_unknown_option_is_one_line():
    with pytest.raises(UserError, match="curriculum: .*chunk"):
        _build("pose", chunk=3)
    with pytest.raises(UserError, match="curriculum.chunks must be an integer >= 1"):
        _build("pose", chunks=0)
    with pytest.raises(UserError, match="curriculum.contiguous_fraction"):
        _build("mixed", contiguous_fraction=2)


def test_contiguous_training_needs_no_curriculum_and_draws_t_for_clex_only():
    node = _node("pose")
    plain = curriculum_from_config(node, max_scale=8, seed=0, spread_positions=False, draws_scale=False)
    assert all(plain.sample(s, 8).t == 1 for s in range(20))
    clex = curriculum_from_config(node, max_scale=8, seed=0, spread_positions=False, draws_scale=True, continuous_scale=True)
    draws = [clex.sample(s, 8) for s in range(20)]
    assert len({d.t for d in draws}) > 2 and all(torch.equal(d.positions, torch.arange(8)) for d in draws)
