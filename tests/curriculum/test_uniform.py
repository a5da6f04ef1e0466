import torch

from clexlab.curriculum import ContiguousPositions, UniformScaleCurriculum, sample_positions, step_generator


def test_same_draws_for_same_seed_and_step_across_simulated_ranks():
    # Two "ranks" build their own curriculum: no communication, same draws.
    rank0, rank1 = UniformScaleCurriculum(16, seed=7), UniformScaleCurriculum(16, seed=7)
    for step in range(50):
        a, b = rank0.sample(step, 64), rank1.sample(step, 64)
        assert a.t == b.t
        assert torch.equal(a.positions, b.positions)


def test_draws_depend_on_seed_and_step_and_not_on_call_order():
    c = UniformScaleCurriculum(16, seed=0)
    forward = [c.sample(s, 32).t for s in range(40)]
    backward = [c.sample(s, 32).t for s in reversed(range(40))][::-1]
    assert forward == backward
    other = [UniformScaleCurriculum(16, seed=1).sample(s, 32).t for s in range(40)]
    assert forward != other


def test_t_covers_one_to_max_uniformly():
    c = UniformScaleCurriculum(4, seed=3)
    counts = torch.bincount(torch.tensor([c.sample(s, 8).t for s in range(4000)]), minlength=5)
    assert counts[0] == 0 and (counts[1:] > 850).all() and (counts[1:] < 1150).all()


def test_positions_sorted_distinct_in_range_first_and_last_kept():
    c = UniformScaleCurriculum(16, seed=0)
    for step in range(200):
        n = 128
        draw = c.sample(step, n)
        p = draw.positions
        assert p.shape == (n,) and p.dtype == torch.long
        assert p[0] == 0 and p[-1] == n * draw.t - 1
        assert (p[1:] > p[:-1]).all()
        assert p.max() < n * draw.t


def test_scale_one_is_contiguous():
    assert torch.equal(sample_positions(10, 1, step_generator(0, 0)), torch.arange(10))
    draw = ContiguousPositions().sample(5, 12)
    assert draw.t == 1 and torch.equal(draw.positions, torch.arange(12))
