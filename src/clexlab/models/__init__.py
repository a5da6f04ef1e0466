"""The LightningModule and the builders of the wrapped transformers model."""

from clexlab.models.builder import build_model
from clexlab.models.lit_module import LongContextLM
from clexlab.models.loss import causal_lm_nll, chunked_nll

__all__ = ["LongContextLM", "build_model", "causal_lm_nll", "chunked_nll"]
