"""Lightning callbacks: long-context evaluation during training, and the reliability of long runs."""

from clexlab.callbacks.last_checkpoint import LastCheckpoint
from clexlab.callbacks.long_context_eval import LongContextEval
from clexlab.callbacks.needle_eval import NeedleEval
from clexlab.callbacks.nonfinite import NonFiniteError, NonFiniteGuard
from clexlab.callbacks.passkey_eval import PasskeyEval
from clexlab.callbacks.rng_state import RNGStateCheckpoint

__all__ = ["LastCheckpoint", "LongContextEval", "NeedleEval", "NonFiniteError", "NonFiniteGuard", "PasskeyEval", "RNGStateCheckpoint"]
