"""Scale-sampling curricula: which scale t and which positions each step trains on."""

from clexlab.curriculum.base import ContiguousPositions, ScaleCurriculum, ScaleSample, step_generator
from clexlab.curriculum.build import curriculum_from_config
from clexlab.curriculum.uniform import UniformScaleCurriculum, sample_positions

__all__ = [
    "ContiguousPositions",
    "curriculum_from_config",
    "ScaleCurriculum",
    "ScaleSample",
    "UniformScaleCurriculum",
    "sample_positions",
    "step_generator",
]

