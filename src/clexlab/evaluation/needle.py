"""Teacher-forced needle score: how likely the model finds the key, without generating.

The passkey prompt (:mod:`clexlab.evaluation.passkey`) is followed by the
answer `` 12345``; one forward over prompt and answer gives, at the answer's
positions only, the log-likelihood of the key and whether each of its digits
is the model's top choice given the true digits before it (EasyContext's
needle evaluation does the same). Greedy retrieval is all-or-nothing; this is
a continuous signal, and cheap enough to run during training.

Only the answer positions are projected to the vocabulary
(:func:`clexlab.models.loss.logits_of` on a few hidden states), so no
``[length x vocab]`` logits tensor is built at any length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clexlab.data.tokenizer import Tokenizer
from clexlab.evaluation.passkey import (
    build_prompt,
    mean_or_none,
    min_prompt_tokens,
    passkey_for,
)
from clexlab.evaluation.plots import plot_heatmap
from clexlab.evaluation.report import TaskReport
from clexlab.models.loss import hidden_states, logits_of
from clexlab.utils.errors import UserError


def answer_ids(tokenizer: Tokenizer, prompt_text: str, key: str) -> list[int]:
    """Tokens of `` {key}`` as they follow the prompt (a BPE may merge across the boundary otherwise)."""
    prompt = tokenizer.encode(prompt_text)
    full = tokenizer.encode(prompt_text + " " + key)
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        return full[len(prompt) :]
    return tokenizer.encode(" " + key)


@dataclass
class NeedleScore:
    """One sample's teacher-forced score.

    Attributes:
        nll: negative log-likelihood of the whole key (nats, summed over its tokens).
        digits_right: digits of the key whose token was the model's argmax.
        digits: digits of the key (tokens without digits, e.g. a space, count toward ``nll`` only).
    """

    nll: float
    digits_right: int
    digits: int


@torch.no_grad()
def score_answer(model: nn.Module, prompt_ids: Sequence[int], target_ids: Sequence[int], tokenizer: Tokenizer) -> NeedleScore:
    """Teacher-forced NLL and per-digit accuracy of ``target_ids`` after ``prompt_ids``, in one forward."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids) + list(target_ids)], device=device)
    hidden = hidden_states(model, ids)
    # Position i predicts token i + 1: the answer's k tokens are predicted by the k positions before them.
    start = len(prompt_ids) - 1
    logits = logits_of(model, hidden[0, start : start + len(target_ids)])
    target = torch.tensor(list(target_ids), device=device)
    nll = F.cross_entropy(logits, target, reduction="sum").item()
    right = logits.argmax(-1) == target
    digits = [sum(c.isdigit() for c in tokenizer.decode([t])) for t in target_ids]
    return NeedleScore(nll, sum(d for d, ok in zip(digits, right.tolist()) if ok), sum(digits))


@dataclass
class NeedleResult:
    """Mean key NLL and per-digit accuracy per ``(length, depth)``; rows = lengths, ``None`` = skipped."""

    lengths: list[int]
    depths: list[float]
    nll: list[list[float | None]]
    digit_accuracy: list[list[float | None]]
    n_samples: int
    seed: int
    samples: list[dict] = field(default_factory=list)

    def mean(self, grid: list[list[float | None]], length: int) -> float | None:
        """A grid's row at ``length`` averaged over depths."""
        return mean_or_none(grid[self.lengths.index(length)])

    def to_dict(self) -> dict:
        """The ``needle_nll`` entry of ``results.json``: per-length means (string keys) and the full grids."""
        return {
            "lengths": list(self.lengths),
            "depths": list(self.depths),
            "nll": {str(n): self.mean(self.nll, n) for n in self.lengths},
            "digit_accuracy": {str(n): self.mean(self.digit_accuracy, n) for n in self.lengths},
            "grid": {"nll": [list(r) for r in self.nll], "digit_accuracy": [list(r) for r in self.digit_accuracy]},
            "n_samples": self.n_samples,
            "seed": self.seed,
        }


def needle_nll(
    model: nn.Module,
    tokenizer: Tokenizer,
    lengths: Sequence[int],
    depths: Sequence[float],
    n_samples: int = 5,
    seed: int = 0,
    prefix_ids: Sequence[int] = (),
    progress: bool = False,
) -> NeedleResult:
    """Teacher-forced passkey scores over ``lengths`` x ``depths``; prompt plus answer fill each length.

    The keys are the passkey task's (``passkey_for(seed, length, depth, sample)``), so
    the two tasks score the same needles.

    Raises:
        UserError: ``n_samples < 1`` or a depth outside [0, 1].
    """
    if n_samples < 1:
        raise UserError(f"eval.needle_nll.samples must be >= 1, got {n_samples}")
    shortest = min_prompt_tokens(tokenizer, prefix_ids) + 8  # room for the key's tokens
    cells = [(int(n), float(d)) for n in lengths for d in depths if int(n) >= shortest]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="needle_nll", leave=False)
    was_training = model.training
    model.eval()
    nll: dict[tuple[int, float], float] = {}
    accuracy: dict[tuple[int, float], float] = {}
    samples: list[dict] = []
    try:
        for length, depth in cells:
            scores, hint = [], 0
            for sample in range(n_samples):
                key = passkey_for(seed, length, depth, sample)
                target = answer_ids(tokenizer, "x", key)  # the key's tokens after a word: its size
                prompt = build_prompt(tokenizer, length - len(target), depth, key, prefix_ids, hint)
                hint = prompt.filler_words
                target = answer_ids(tokenizer, prompt.text, key)
                score = score_answer(model, prompt.ids, target, tokenizer)
                scores.append(score)
                samples.append({"length": length, "depth": depth, "sample": sample, "key": key, "nll": score.nll,
                                "digits_right": score.digits_right, "tokens": len(prompt.ids) + len(target)})
            nll[(length, depth)] = math.fsum(s.nll for s in scores) / len(scores)
            digits = sum(s.digits for s in scores)
            accuracy[(length, depth)] = sum(s.digits_right for s in scores) / digits if digits else None
    finally:
        model.train(was_training)
    rows = [int(n) for n in lengths]
    cols = [float(d) for d in depths]
    return NeedleResult(
        rows, cols,
        [[nll.get((n, d)) for d in cols] for n in rows],
        [[accuracy.get((n, d)) for d in cols] for n in rows],
        n_samples, seed, samples,
    )


def _cell(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def format_needle_table(needle: Mapping[str, Any]) -> str:
    """Markdown: per length, the mean key NLL (nats) and the per-digit accuracy over depths."""
    lines = ["| length | key NLL (nats) | digit accuracy |", "|---:|---:|---:|"]
    for n in needle["lengths"]:
        lines.append(f"| {n} | {_cell(needle['nll'][str(n)], '{:.3f}')} | {_cell(needle['digit_accuracy'][str(n)], '{:.2f}')} |")
    return "\n".join(lines)


def needle_report(needle: Mapping[str, Any], out_dir: str | Path) -> TaskReport:
    """The task's report: table, per-(length, depth) digit-accuracy heatmap, metrics ``eval/needle_*@<length>``."""
    path = Path(out_dir) / "needle_heatmap.png"
    depths = [f"{d:g}" for d in needle["depths"]]
    plot_heatmap(needle["lengths"], depths, needle["grid"]["digit_accuracy"], path, "key depth", "prompt length (tokens)",
                 "Needle: per-digit accuracy (teacher-forced)")
    metrics = {f"eval/needle_nll@{n}": v for n, v in needle["nll"].items() if v is not None}
    metrics.update({f"eval/needle_digit_acc@{n}": v for n, v in needle["digit_accuracy"].items() if v is not None})
    rows = [[n, needle["nll"][str(n)], needle["digit_accuracy"][str(n)]] for n in needle["lengths"]]
    return TaskReport(
        key="needle_nll",
        payload=dict(needle),
        title=f"Needle, teacher-forced ({needle['n_samples']} keys per cell, seed {needle['seed']})",
        table=format_needle_table(needle),
        metrics=metrics,
        tables={"eval/needle_table": (["length", "key_nll", "digit_accuracy"], rows)},
        images={"needle_heatmap": path},
    )


def run_needle(
    model: nn.Module, tokenizer: Tokenizer, options: Any, lengths: Sequence[int], seed: int,
    prefix_ids: Sequence[int], out_dir: str | Path,
) -> TaskReport:
    """Run the ``eval.needle_nll`` options (lengths, depths, samples) and report (null lengths: the perplexity ones)."""
    result = needle_nll(model, tokenizer, list(options.lengths or lengths), list(options.depths), options.samples, seed,
                        prefix_ids, progress=True)
    return needle_report(result.to_dict(), out_dir)
