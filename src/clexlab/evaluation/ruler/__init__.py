"""RULER's synthetic tasks, generated offline: NIAH, variable tracking, common and frequent words.

Read NVIDIA/RULER (``scripts/data/synthetic``, ``scripts/eval/synthetic``) for
the definitions; this is an independent implementation. Every prompt is a
function of ``(seed, length, task, sample)``; word lists come from the
``wonderwords`` wheel; the essay haystack is the run's own held-out text.
"""

from clexlab.evaluation.ruler.base import (
    RulerTask,
    Sample,
    TaskContext,
    postprocess,
    string_match_all,
    string_match_part,
)
from clexlab.evaluation.ruler.harness import (
    TASKS,
    PromptBuilder,
    RulerPrompt,
    RulerResult,
    get_task,
    ruler_eval,
)
from clexlab.evaluation.ruler.outputs import (
    format_ruler_table,
    plot_ruler_heatmap,
    ruler_report,
    run_ruler,
)
from clexlab.evaluation.ruler.words import essay_words

__all__ = [
    "TASKS",
    "PromptBuilder",
    "RulerPrompt",
    "RulerResult",
    "RulerTask",
    "Sample",
    "TaskContext",
    "essay_words",
    "format_ruler_table",
    "get_task",
    "plot_ruler_heatmap",
    "postprocess",
    "ruler_eval",
    "ruler_report",
    "run_ruler",
    "string_match_all",
    "string_match_part",
]
