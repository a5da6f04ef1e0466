"""Long-context evaluation, usable without Lightning: perplexity (two protocols), passkey, report, figures."""

from clexlab.evaluation.passkey import (
    PasskeyPrompt,
    PasskeyResult,
    build_prompt,
    parse_passkey,
    passkey_for,
    passkey_retrieval,
)
from clexlab.evaluation.perplexity import LengthResult, perplexity_at_lengths, resolve_lengths, target_budget
from clexlab.evaluation.plots import (
    clex_frequency_curves,
    plot_clex_frequencies,
    plot_passkey_heatmap,
    plot_ppl_vs_length,
    read_png_data,
)
from clexlab.evaluation.report import format_passkey_table, format_report, format_table, results_payload, write_json
from clexlab.evaluation.sliding import sliding_budget, sliding_window_perplexity, window_plan

__all__ = [
    "LengthResult",
    "PasskeyPrompt",
    "PasskeyResult",
    "build_prompt",
    "clex_frequency_curves",
    "format_passkey_table",
    "format_report",
    "format_table",
    "parse_passkey",
    "passkey_for",
    "passkey_retrieval",
    "perplexity_at_lengths",
    "plot_clex_frequencies",
    "plot_passkey_heatmap",
    "plot_ppl_vs_length",
    "read_png_data",
    "resolve_lengths",
    "results_payload",
    "sliding_budget",
    "sliding_window_perplexity",
    "target_budget",
    "window_plan",
    "write_json",
]
