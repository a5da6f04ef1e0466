"""The interface every scale-sampling schedule implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScaleSample:
    """One step's draw: the scale ``t`` and the ``positions`` ([seq_len], int64, sorted).

    ``t`` is an ``int`` unless the curriculum draws continuous scales (then a
    ``float`` in ``[1, t_max]``, only for methods that accept one).
    """

    t: int | float
    positions: torch.Tensor


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, step)`` only.

    Every rank that knows the seed and the global step draws the same numbers,
    with no communication, and a resumed run draws what the original would have.
    """
    # Mix with large odd constants so nearby (seed, step) pairs give unrelated streams.
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(mixed)
    return generator


class ScaleCurriculum(abc.ABC):
    """Decides, for each training step, the scale t and the positions of the tokens.

    Implementations must be pure functions of ``(step, seq_len)`` and their
    constructor arguments, so all data-parallel ranks agree without talking.
    """

    max_scale: int = 1
    continuous: bool = False  # draws non-integer t (only methods with continuous_scale accept it)

    @abc.abstractmethod
    def sample(self, step: int, seq_len: int) -> ScaleSample:
        """Draw the scale and positions for global step ``step``."""

    def tag(self) -> str:
        """What sets this curriculum apart from the paper's, for method labels (``pose2``, ``one0.5``); empty if nothing."""
        return ""


class ContiguousPositions(ScaleCurriculum):
    """Always t = 1 and positions ``0..n-1``: ordinary training (plain RoPE)."""

    def sample(self, step: int, seq_len: int) -> ScaleSample:
        return ScaleSample(t=1, positions=torch.arange(seq_len, dtype=torch.long))
