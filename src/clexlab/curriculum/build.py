"""Build the curriculum a run's ``curriculum`` config node names (``conf/curriculum/*.yaml``)."""

from __future__ import annotations

from clexlab.curriculum.base import ContiguousPositions, ScaleCurriculum
from clexlab.utils.errors import UserError
from clexlab.utils.targets import import_target

DEFAULT = "clexlab.curriculum.UniformScaleCurriculum"


def curriculum_from_config(
    node: dict | None,
    *,
    max_scale: int,
    seed: int,
    spread_positions: bool,
    draws_scale: bool,
    continuous_scale: bool = False,
) -> ScaleCurriculum:
    """The curriculum a ``curriculum`` node (``_target_`` + options) describes, for one run.

    Args:
        node: the ``curriculum`` config node; None: the paper's uniform curriculum.
        max_scale: t_max (the method's own, e.g. ``clex.max_scale``, or ``train.sampling_max_scale``).
        seed: the run's seed (draws depend on ``(seed, step)`` only).
        spread_positions: draw positions over ``n * t`` (``train.position_sampling``).
        draws_scale: the method's frequencies depend on t (CLEX), so t is drawn even
            when positions stay contiguous; otherwise contiguous training needs no curriculum.
        continuous_scale: the method's frequencies accept a non-integer t (CLEX).
            A method whose frequencies do not depend on t uses t only for the
            positions' span (``round(n * t)``), so it takes any t.

    Raises:
        UserError: a bad ``_target_`` or option, or continuous t for a method that
            draws its frequencies from integer t only.
    """
    if not spread_positions and not draws_scale:
        return ContiguousPositions()
    node = dict(node or {})
    cls = import_target(node.pop("_target_", DEFAULT), "curriculum._target_", ScaleCurriculum)
    try:
        curriculum = cls(max_scale=int(max_scale), seed=int(seed), spread_positions=bool(spread_positions), **node)
    except TypeError as err:  # an option the class does not take, e.g. a typo
        raise UserError(f"curriculum: {err}; see conf/curriculum/*.yaml for each class's options") from err
    if curriculum.continuous and draws_scale and not continuous_scale:
        raise UserError(
            "curriculum.continuous=true draws non-integer t, which this rope method's frequencies do not accept: "
            "set curriculum.continuous=false"
        )
    return curriculum


def curriculum_for_method(
    node: dict | None, method, *, seed: int, position_sampling: bool, sampling_max_scale: int | None = None
) -> ScaleCurriculum:
    """The curriculum a run of RoPE method ``method`` trains with (what ``LongContextLM`` builds).

    Args:
        node: the ``curriculum`` config node.
        method: a :class:`~clexlab.rope.methods.base.RopeMethod`: its ``max_scale`` (t_max of
            its own, e.g. CLEX's), ``uses_scale`` and ``continuous_scale``.
        seed: the run's seed.
        position_sampling: the run's ``train.position_sampling`` after the method's default.
        sampling_max_scale: t_max for methods without one of their own (``train.sampling_max_scale``).
    """
    return curriculum_from_config(
        node,
        max_scale=int(method.max_scale or sampling_max_scale or 1),
        seed=seed,
        spread_positions=position_sampling,
        draws_scale=method.uses_scale,
        continuous_scale=method.continuous_scale,
    )
