"""Build the curriculum a run's ``curriculum`` config node names (``conf/curriculum/*.yaml``)."""

from __future__ import annotations

from clexlab.curriculum.base import ContiguousPositions, ScaleCurriculum
from clexlab.utils.targets import import_target

DEFAULT = "clexlab.curriculum.UniformScaleCurriculum"


def curriculum_from_config(
    node: dict | None, *, max_scale: int, seed: int, spread_positions: bool, draws_scale: bool
) -> ScaleCurriculum:
    """The curriculum a ``curriculum`` node (``_target_`` + options) describes, for one run.

    Args:
        node: the ``curriculum`` config node; None: the paper's uniform curriculum.
        max_scale: t_max (the method's own, e.g. ``clex.max_scale``, or ``train.sampling_max_scale``).
        seed: the run's seed (draws depend on ``(seed, step)`` only).
        spread_positions: draw positions over ``n * t`` (``train.position_sampling``).
        draws_scale: the method's frequencies depend on t (CLEX), so t is drawn even
            when positions stay contiguous; otherwise contiguous training needs no curriculum.
    """
    if not spread_positions and not draws_scale:
        return ContiguousPositions()
    node = dict(node or {})
    cls = import_target(node.pop("_target_", DEFAULT), "curriculum._target_", ScaleCurriculum)
    return cls(max_scale=int(max_scale), seed=int(seed), spread_positions=bool(spread_positions), **node)
