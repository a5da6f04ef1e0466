"""RULER's outputs: the task x length table, its heatmap, the per-task average, and the logger pieces."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from clexlab.data.tokenizer import Tokenizer
from clexlab.evaluation.passkey import mean_or_none
from clexlab.evaluation.plots import plot_heatmap
from clexlab.evaluation.report import TaskReport
from clexlab.evaluation.ruler.harness import ruler_eval


def _cell(value: float | None) -> str:
    # None: the length could not hold the task's prompt without haystack, so the cell did not run.
    return "–" if value is None else f"{value:.1f}"


def format_ruler_table(ruler: Mapping[str, Any]) -> str:
    """Markdown: one row per task (scores 0-100 per length, then its mean), and the average over tasks."""
    lengths = [str(n) for n in ruler["lengths"]]
    lines = ["| task | " + " | ".join(lengths) + " | mean |", "|---|" + "---:|" * (len(lengths) + 1)]
    for task in ruler["tasks"]:
        row = ruler["score"][task]
        lines.append(f"| {task} | " + " | ".join(_cell(row[n]) for n in lengths) + f" | {_cell(ruler['task_average'][task])} |")
    average = [ruler["average"][n] for n in lengths]
    lines.append("| **average** | " + " | ".join(_cell(v) for v in average) + f" | {_cell(mean_or_none(average))} |")
    return "\n".join(lines)


def plot_ruler_heatmap(ruler: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """Tasks (rows, the average last) x lengths (columns), scores 0-100."""
    lengths = [str(n) for n in ruler["lengths"]]
    rows = [*ruler["tasks"], "average"]
    grid = [[ruler["score"][t][n] for n in lengths] for t in ruler["tasks"]] + [[ruler["average"][n] for n in lengths]]
    return plot_heatmap(rows, ruler["lengths"], grid, path, "prompt length (tokens)", "task", "RULER (score, 0-100)", 100.0, "{:.0f}")


def ruler_report(ruler: Mapping[str, Any], out_dir: str | Path) -> TaskReport:
    """The task's report: table, heatmap (``ruler_heatmap.png``), metrics ``eval/ruler@<length>`` and per task."""
    path = Path(out_dir) / "ruler_heatmap.png"
    plot_ruler_heatmap(ruler, path)
    lengths = [str(n) for n in ruler["lengths"]]
    metrics = {f"eval/ruler@{n}": v for n, v in ruler["average"].items() if v is not None}
    for task in ruler["tasks"]:
        metrics.update({f"eval/ruler/{task}@{n}": v for n, v in ruler["score"][task].items() if v is not None})
    rows = [[t, *[ruler["score"][t][n] for n in lengths], ruler["task_average"][t]] for t in ruler["tasks"]]
    rows.append(["average", *[ruler["average"][n] for n in lengths], mean_or_none([ruler["average"][n] for n in lengths])])
    title = f"RULER ({ruler['n_samples']} samples per cell, seed {ruler['seed']}, chat template {'on' if ruler['chat_template'] else 'off'})"
    return TaskReport(
        key="ruler",
        payload=dict(ruler),
        title=title,
        table=format_ruler_table(ruler),
        metrics=metrics,
        tables={"eval/ruler_table": (["task", *lengths, "mean"], rows)},
        images={"ruler_heatmap": path},
    )


def run_ruler(
    model: nn.Module,
    tokenizer: Tokenizer,
    options: Any,
    lengths: Sequence[int],
    seed: int,
    essay: Callable[[], Sequence[str]],
    prefix_ids: Sequence[int],
    out_dir: str | Path,
) -> TaskReport:
    """Run the ``eval.ruler`` options (tasks, samples, lengths, chat_template, tokens_to_generate) and report.

    Args:
        model: the causal LM.
        tokenizer: its tokenizer.
        options: the typed ``eval.ruler`` node.
        lengths: the perplexity lengths, used when ``options.lengths`` is null (too-short cells are then skipped).
        seed: seeds every prompt.
        essay: returns the held-out essay words (called only when a task needs them).
        prefix_ids: BOS ids of plain prompts.
        out_dir: where the heatmap goes.
    """
    explicit = bool(options.lengths)
    result = ruler_eval(
        model, tokenizer, list(options.lengths) if explicit else list(lengths), list(options.tasks), options.samples,
        seed, essay, options.chat_template, prefix_ids, options.tokens_to_generate, strict=explicit, progress=True,
    )
    return ruler_report(result.to_dict(), out_dir)
