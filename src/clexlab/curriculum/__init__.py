"""Scale-sampling curricula: which scale t and which positions each step trains on.

Each option of ``conf/curriculum/`` is a class here; a t distribution
(:mod:`~clexlab.curriculum.scales`) combines with any position scheme
(:mod:`~clexlab.curriculum.positions`).
"""

from clexlab.curriculum.base import (
    ContiguousPositions,
    ScaleCurriculum,
    ScaleSample,
    step_generator,
)
from clexlab.curriculum.build import curriculum_for_method, curriculum_from_config
from clexlab.curriculum.mixed import MixedCurriculum
from clexlab.curriculum.pose import ChunkedPositionCurriculum
from clexlab.curriculum.positions import (
    chunked_positions,
    contiguous_positions,
    random_positions,
)
from clexlab.curriculum.sampled import SampledCurriculum
from clexlab.curriculum.scales import ScaleDistribution, span_of
from clexlab.curriculum.uniform import (
    RandomPositionCurriculum,
    UniformScaleCurriculum,
    sample_positions,
)

__all__ = [
    "ChunkedPositionCurriculum",
    "ContiguousPositions",
    "MixedCurriculum",
    "RandomPositionCurriculum",
    "SampledCurriculum",
    "ScaleCurriculum",
    "ScaleDistribution",
    "ScaleSample",
    "UniformScaleCurriculum",
    "chunked_positions",
    "contiguous_positions",
    "curriculum_for_method",
    "curriculum_from_config",
    "random_positions",
    "sample_positions",
    "span_of",
    "step_generator",
]
