"""Position schemes: sorted, distinct, inside [0, span), ends kept where promised (hypothesis properties)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clexlab.curriculum import (
    chunked_positions,
    contiguous_positions,
    random_positions,
    step_generator,
)

# (seq_len, span) with span >= seq_len, plus a seed for the step generator.
windows = st.integers(1, 96).flatmap(lambda n: st.tuples(st.just(n), st.integers(n, 24 * n), st.integers(0, 2**31)))


def _valid(p: torch.Tensor, n: int, span: int) -> None:
    assert p.shape == (n,) and p.dtype == torch.long
    assert (p[1:] > p[:-1]).all(), "sorted and distinct"
    assert int(p.min()) >= 0 and int(p.max()) < span


@settings(max_examples=200, deadline=None)
@given(windows)
def test_random_positions_are_sorted_distinct_in_window_with_ends(window):
    n, span, seed = window
    p = random_positions(n, span, step_generator(seed, 0))
    _valid(p, n, span)
    if n >= 2:
        assert p[0] == 0 and p[-1] == span - 1


@settings(max_examples=200, deadline=None)
@given(windows, st.integers(1, 6), st.booleans())
def test_chunked_positions_keep_chunks_contiguous(window, chunks, keep_ends):
    n, span, seed = window
    p = chunked_positions(n, span, chunks, step_generator(seed, 1), keep_ends=keep_ends)
    _valid(p, n, span)
    # Breaks between neighbours (gaps > 1) only at chunk boundaries: at most chunks - 1 of them.
    assert int((torch.diff(p) > 1).sum()) <= max(chunks - 1, 0) + (1 if keep_ends and chunks == 1 else 0)
    if keep_ends and n >= 2:
        assert p[0] == 0 and p[-1] == span - 1


def test_chunked_positions_vary_the_skips_across_steps():
    # PoSE's point: distances across the chunks cover the window, not one fixed gap.
    skips = {int(torch.diff(chunked_positions(64, 1024, 2, step_generator(0, s))).max()) for s in range(50)}
    assert len(skips) > 30 and max(skips) > 500 and min(skips) < 300


def test_same_generator_state_same_positions():
    a = chunked_positions(50, 800, 3, step_generator(4, 9))
    b = chunked_positions(50, 800, 3, step_generator(4, 9))
    assert torch.equal(a, b)
    assert not torch.equal(a, chunked_positions(50, 800, 3, step_generator(4, 10)))


def test_window_equal_to_sequence_is_contiguous():
    g = step_generator(0, 0)
    assert torch.equal(random_positions(16, 16, g), contiguous_positions(16))
    assert torch.equal(chunked_positions(16, 16, 2, g), contiguous_positions(16))


def test_window_shorter_than_sequence_is_refused():
    with pytest.raises(ValueError, match="seq_len <= span"):
        random_positions(16, 8, step_generator(0, 0))
