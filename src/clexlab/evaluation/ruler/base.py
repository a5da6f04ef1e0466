"""What every RULER task provides: a sample builder, an answer budget and a metric.

A task builds one sample from a seeded ``random.Random`` and a haystack size
``n`` (noise sentences, essay words, list words...); the harness
(:mod:`clexlab.evaluation.ruler.harness`) searches the largest ``n`` whose
prompt, plus the task's answer budget, fits the target length in the model's
own tokens. A builder must be a pure function of ``(rng seed, n, context)``:
the search calls it several times with fresh generators of the same seed.

Scoring is RULER's (``scripts/eval/synthetic/constants.py``): a case-insensitive
substring match, ``string_match_all`` giving each prediction the share of its
references it contains and ``string_match_part`` 1 if it contains any, both
averaged over predictions, scaled to 0-100 and rounded to two decimals.
Predictions are first cleaned as RULER's evaluator does: stripped, control
characters turned into newlines.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Sample:
    """One RULER prompt before it meets the tokenizer.

    Attributes:
        task_text: the instruction, context and question (what a chat template wraps as the user turn).
        answer_prefix: the start of the answer, appended after the (optional) chat wrapper.
        answers: the strings a correct prediction contains.
    """

    task_text: str
    answer_prefix: str
    answers: list[str]


@dataclass
class TaskContext:
    """What a builder may need besides its generator and size.

    Attributes:
        length: the target prompt length in tokens (RULER switches few-shot
            settings below 4096 tokens, and sizes the frequent-words vocabulary from it).
        essay: words of the held-out essay haystack.
        count_tokens: tokens of a text in the model's tokenizer (sizes few-shot examples).
    """

    length: int
    essay: Sequence[str] = ()
    count_tokens: Callable[[str], int] = len


@dataclass(frozen=True)
class RulerTask:
    """A RULER task: its family, RULER's answer budget and metric, and its sample builder.

    Attributes:
        name: RULER's task name (``niah_single_1``, ``vt``, ``cwe``, ...).
        family: ``niah``, ``variable_tracking``, ``common_words_extraction`` or ``freq_words_extraction``.
        tokens_to_generate: RULER's answer budget: subtracted from the length when sizing, and the generation limit.
        metric: ``all`` (string_match_all) or ``part`` (string_match_part).
        build: ``build(rng, n, ctx) -> Sample``.
        needs_essay: the task's haystack is the held-out essay.
    """

    name: str
    family: str
    tokens_to_generate: int
    metric: str
    build: Callable[[random.Random, int, TaskContext], Sample] = field(compare=False)
    needs_essay: bool = False


_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """A generated continuation as RULER scores it: stripped, control characters as newlines."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def _contains(prediction: str, reference: str) -> float:
    return 1.0 if reference.lower() in prediction.lower() else 0.0


def string_match_all(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over predictions of the share of their references found in them, in percent."""
    if not predictions:
        raise ValueError("no predictions to score")
    total = sum(sum(_contains(p, r) for r in refs) / len(refs) for p, refs in zip(predictions, references, strict=True))
    return round(100.0 * total / len(predictions), 2)


def string_match_part(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over predictions of whether any of their references is found in them, in percent."""
    if not predictions:
        raise ValueError("no predictions to score")
    total = sum(max(_contains(p, r) for r in refs) for p, refs in zip(predictions, references, strict=True))
    return round(100.0 * total / len(predictions), 2)


METRICS = {"all": string_match_all, "part": string_match_part}
