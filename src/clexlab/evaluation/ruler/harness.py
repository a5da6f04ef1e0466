"""The RULER harness: size each prompt in the model's tokens, generate greedily, score as RULER does.

For every (task, length, sample) a generator is seeded from
``ruler:{seed}:{task}:{length}:{sample}`` only, and the haystack size is
searched so that the prompt plus the task's answer budget (RULER's
``tokens_to_generate``) is as long as possible without exceeding the length.
With ``chat_template`` the task text becomes the user turn of the tokenizer's
chat template and the answer prefix opens the assistant's turn, as RULER's
model templates do; the template's tokens count toward the length.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from clexlab.data.tokenizer import Tokenizer
from clexlab.evaluation.passkey import (
    longest_fit,  # the same gallop-and-bisect search
)
from clexlab.evaluation.passkey import mean_or_none
from clexlab.evaluation.ruler import extraction, niah, variable_tracking
from clexlab.evaluation.ruler.base import METRICS, RulerTask, TaskContext, postprocess
from clexlab.evaluation.ruler.chat import chat_wrap
from clexlab.utils.errors import UserError

log = logging.getLogger("clexlab")

TASKS: dict[str, RulerTask] = {**niah.TASKS, **variable_tracking.TASKS, **extraction.TASKS}


def get_task(name: str) -> RulerTask:
    """The task called ``name``, or a one-line error listing the tasks."""
    if name not in TASKS:
        raise UserError(f"eval.ruler.tasks: unknown task {name!r}; choose from {list(TASKS)}")
    return TASKS[name]


@dataclass
class RulerPrompt:
    """One sized prompt: ids fed to the model, the expected answers, the haystack size reached."""

    ids: list[int]
    answers: list[str]
    haystack: int


class PromptBuilder:
    """Builds sized prompts of one task for one tokenizer.

    Args:
        task: the RULER task.
        tokenizer: the model's tokenizer.
        essay: words of the held-out essay haystack.
        chat_template: wrap the task text in the tokenizer's chat template.
        prefix_ids: ids before a plain prompt (a LLaMA tokenizer's BOS); not used with the chat template,
            which renders its own.
        budget: answer tokens reserved (default: the task's ``tokens_to_generate``).
    """

    def __init__(
        self,
        task: RulerTask,
        tokenizer: Tokenizer,
        essay: Sequence[str] = (),
        chat_template: bool = False,
        prefix_ids: Sequence[int] = (),
        budget: int | None = None,
    ) -> None:
        self.task, self.tokenizer, self.essay = task, tokenizer, list(essay)
        self.chat_template = chat_template
        self.prefix_ids = [] if chat_template else list(prefix_ids)
        self.budget = int(task.tokens_to_generate if budget is None else budget)

    def _ids(self, seed_key: str, n: int, length: int) -> tuple[list[int], list[str]]:
        ctx = TaskContext(length, self.essay, lambda text: len(self.tokenizer.encode(text)))
        sample = self.task.build(random.Random(seed_key), n, ctx)
        text = chat_wrap(self.tokenizer, sample.task_text) if self.chat_template else sample.task_text
        return self.prefix_ids + self.tokenizer.encode(text + sample.answer_prefix), sample.answers

    def minimum(self, length: int, seed: int = 0, n_samples: int = 1) -> int:
        """Tokens of the longest of the cell's prompts without haystack, plus the answer budget.

        Keys and values differ in length from sample to sample (words, UUIDs),
        so every sample of the cell is measured: a shorter length cannot run them all.
        """
        keys = [f"ruler:{seed}:{self.task.name}:{length}:{i}" for i in range(n_samples)]
        return max(len(self._ids(key, 0, length)[0]) for key in keys) + self.budget

    def build(self, length: int, seed: int, sample: int, hint: int = 0) -> RulerPrompt:
        """The longest prompt of sample ``sample`` whose tokens plus the answer budget fit ``length``."""
        key = f"ruler:{seed}:{self.task.name}:{length}:{sample}"
        target = length - self.budget

        def size(n: int) -> int:
            return len(self._ids(key, n, length)[0])

        if size(0) > target:
            raise UserError(self.too_short(length, size(0)))
        n = longest_fit(size, target, hint)
        ids, answers = self._ids(key, n, length)
        return RulerPrompt(ids, answers, n)

    def too_short(self, length: int, shortest: int) -> str:
        """The one-line message for a length that cannot hold the prompt without haystack."""
        return (
            f"eval.ruler.lengths: {length} tokens is too short for RULER task {self.task.name} "
            f"(its prompt without haystack is {shortest} tokens, plus {self.budget} for the answer): "
            "use longer lengths or drop the task from eval.ruler.tasks"
        )


@dataclass
class RulerResult:
    """RULER scores (0-100) per task and length; ``None`` where the length could not hold the task."""

    tasks: list[str]
    lengths: list[int]
    scores: dict[str, list[float | None]]
    n_samples: int
    seed: int
    chat_template: bool
    tokens_to_generate: dict[str, int]
    answers: list[dict] = field(default_factory=list)

    def average(self, length: int) -> float | None:
        """Mean over tasks at one length (tasks that ran)."""
        i = self.lengths.index(length)
        return mean_or_none([self.scores[t][i] for t in self.tasks])

    def task_average(self, task: str) -> float | None:
        """Mean over lengths of one task (lengths that ran)."""
        return mean_or_none(self.scores[task])

    def to_dict(self) -> dict:
        """The ``ruler`` entry of ``results.json`` (per-length numbers keyed by the length as a string)."""
        return {
            "tasks": list(self.tasks),
            "lengths": list(self.lengths),
            "score": {t: {str(n): s for n, s in zip(self.lengths, self.scores[t])} for t in self.tasks},
            "average": {str(n): self.average(n) for n in self.lengths},
            "task_average": {t: self.task_average(t) for t in self.tasks},
            "n_samples": self.n_samples,
            "seed": self.seed,
            "chat_template": self.chat_template,
            "tokens_to_generate": dict(self.tokens_to_generate),
        }


@torch.no_grad()
def ruler_eval(
    model: nn.Module,
    tokenizer: Tokenizer,
    lengths: Sequence[int],
    tasks: Sequence[str],
    n_samples: int = 5,
    seed: int = 0,
    essay: Sequence[str] | Callable[[], Sequence[str]] = (),
    chat_template: bool = False,
    prefix_ids: Sequence[int] = (),
    tokens_to_generate: int | None = None,
    strict: bool = False,
    progress: bool = False,
) -> RulerResult:
    """Greedy RULER over ``tasks`` x ``lengths``, ``n_samples`` prompts per cell.

    Args:
        model: a transformers causal LM (its ``generate`` is used).
        tokenizer: the model's tokenizer.
        lengths: prompt lengths in tokens, answer budget included.
        tasks: RULER task names (:data:`TASKS`).
        n_samples: prompts per (task, length).
        seed: seeds every prompt.
        essay: held-out words for essay haystacks, or a function returning them (called only if a task needs it).
        chat_template: wrap prompts in the tokenizer's chat template.
        prefix_ids: ids before plain prompts (BOS).
        tokens_to_generate: answer budget for every task (None: RULER's per task).
        strict: a length too short for a task is an error (explicit ``eval.ruler.lengths``) rather than a skipped cell.
        progress: show a progress bar.

    Raises:
        UserError: an unknown task, or (``strict``) a length too short for a task.
    """
    if n_samples < 1:
        raise UserError(f"eval.ruler.samples must be >= 1, got {n_samples}")
    specs = [get_task(t) for t in tasks]
    if callable(essay):
        essay = essay() if any(s.needs_essay for s in specs) else ()
    builders = {s.name: PromptBuilder(s, tokenizer, essay, chat_template, prefix_ids, tokens_to_generate) for s in specs}
    runnable: dict[tuple[str, int], bool] = {}
    skipped: dict[str, list[int]] = {}
    for name, builder in builders.items():
        for n in lengths:
            shortest = builder.minimum(int(n), seed, n_samples)
            runnable[(name, int(n))] = shortest <= int(n)
            if shortest > int(n):
                if strict:
                    raise UserError(builder.too_short(int(n), shortest - builder.budget))
                skipped.setdefault(name, []).append(int(n))
    if skipped:
        log.warning("ruler: lengths too short for the prompt without haystack, skipped: %s",
                    "; ".join(f"{t} {ns}" for t, ns in skipped.items()))
    device = next(model.parameters()).device
    eos = getattr(tokenizer, "eos_token_id", None)
    cells = [(t, int(n)) for t in tasks for n in lengths if runnable[(t, int(n))]]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="ruler", leave=False)
    scores: dict[tuple[str, int], float] = {}
    answers: list[dict] = []
    was_training = model.training
    model.eval()
    try:
        for name, length in cells:
            builder, hint = builders[name], 0
            predictions, references = [], []
            for sample in range(n_samples):
                prompt = builder.build(length, seed, sample, hint)
                hint = prompt.haystack
                ids = torch.tensor([prompt.ids], device=device)
                out = model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=builder.budget,
                    do_sample=False, pad_token_id=eos, eos_token_id=eos,
                )
                new = out[0, ids.shape[1] :].tolist()
                new = new[: new.index(eos)] if eos in new else new  # the end-of-text token is no part of the answer
                prediction = postprocess(tokenizer.decode(new))
                predictions.append(prediction)
                references.append(prompt.answers)
                answers.append({"task": name, "length": length, "sample": sample, "answers": prompt.answers,
                                "prediction": prediction, "prompt_tokens": len(prompt.ids)})
            scores[(name, length)] = METRICS[builder.task.metric](predictions, references)
    finally:
        model.train(was_training)
    grid = {t: [scores.get((t, int(n))) for n in lengths] for t in tasks}
    budgets = {name: b.budget for name, b in builders.items()}
    return RulerResult(list(tasks), [int(n) for n in lengths], grid, n_samples, seed, chat_template, budgets, answers)
