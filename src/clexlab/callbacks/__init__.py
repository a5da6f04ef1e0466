"""Lightning callbacks that run clexlab.evaluation during training."""

from clexlab.callbacks.long_context_eval import LongContextEval

__all__ = ["LongContextEval"]
