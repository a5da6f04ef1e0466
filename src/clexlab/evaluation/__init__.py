"""Long-context evaluation, usable without Lightning: perplexity (two protocols), passkey, KV policies, report, figures.

RULER (:mod:`clexlab.evaluation.ruler`), the teacher-forced needle score (:mod:`clexlab.evaluation.needle`) and
LongBench from local files (:mod:`clexlab.evaluation.longbench`) each live in their own module.
"""

from clexlab.evaluation.kv_policies import KVPolicy, make_policy, use_kv_policy
from clexlab.evaluation.needle import NeedleResult, needle_nll
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
    plot_heatmap,
    plot_passkey_heatmap,
    plot_ppl_vs_length,
    read_png_data,
)
from clexlab.evaluation.report import TaskReport, format_passkey_table, format_report, format_table, results_payload, write_json
from clexlab.evaluation.ruler import RulerResult, ruler_eval
from clexlab.evaluation.sliding import sliding_budget, sliding_window_perplexity, window_plan

__all__ = [
    "KVPolicy",
    "LengthResult",
    "NeedleResult",
    "PasskeyPrompt",
    "PasskeyResult",
    "RulerResult",
    "TaskReport",
    "build_prompt",
    "clex_frequency_curves",
    "format_passkey_table",
    "format_report",
    "format_table",
    "make_policy",
    "needle_nll",
    "parse_passkey",
    "passkey_for",
    "passkey_retrieval",
    "perplexity_at_lengths",
    "plot_clex_frequencies",
    "plot_heatmap",
    "plot_passkey_heatmap",
    "plot_ppl_vs_length",
    "read_png_data",
    "resolve_lengths",
    "results_payload",
    "ruler_eval",
    "sliding_budget",
    "sliding_window_perplexity",
    "target_budget",
    "use_kv_policy",
    "window_plan",
    "write_json",
]
