"""Long-context evaluation, usable without Lightning."""

from clexlab.evaluation.perplexity import LengthResult, perplexity_at_lengths, resolve_lengths, target_budget
from clexlab.evaluation.report import format_table, results_payload, write_json

__all__ = [
    "LengthResult",
    "format_table",
    "perplexity_at_lengths",
    "resolve_lengths",
    "results_payload",
    "target_budget",
    "write_json",
]
