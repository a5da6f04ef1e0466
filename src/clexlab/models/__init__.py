"""The LightningModule and the builders of the wrapped transformers model."""

from clexlab.models.builder import build_model
from clexlab.models.loss import causal_lm_nll, chunked_nll

__all__ = ["LongContextLM", "build_model", "causal_lm_nll", "chunked_nll"]


def __getattr__(name: str):
    # LongContextLM pulls in Lightning: imported on first use so clexlab.evaluation stays Lightning-free.
    if name == "LongContextLM":
        from clexlab.models.lit_module import LongContextLM

        return LongContextLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
