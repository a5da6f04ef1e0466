"""RULER's needle-in-a-haystack family: single, multikey, multivalue, multiquery.

A needle is the sentence "One of the special magic {numbers} for {key} is:
{value}."; the haystack is the noise filler, the held-out essay, or other
needles (distractors with random keys and values). The question asks for the
values of one or more keys; a prediction scores by the share of the expected
values it contains (string_match_all). The eight variants and their settings
are RULER's (``scripts/synthetic.yaml``), except that the essay is the run's
own held-out text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from clexlab.evaluation.ruler.base import RulerTask, Sample, TaskContext
from clexlab.evaluation.ruler.words import (
    NOISE,
    essay_text,
    insert_at_depths,
    insert_at_random_lines,
    random_value,
    sentences,
)

TEMPLATE = (
    "Some special magic {type_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_v} afterwards.\n{context}\n"
    "What are all the special magic {type_v} for {query} mentioned in the provided text?"
)
ANSWER_PREFIX = " The special magic {type_v} for {query} mentioned in the provided text are"
NEEDLE = "One of the special magic {type_v} for {key} is: {value}."
TOKENS_TO_GENERATE = 128


@dataclass(frozen=True)
class NiahSpec:
    """One NIAH variant: haystack (``noise``, ``essay``, ``needle``), key/value kinds and counts."""

    haystack: str
    key: str = "words"
    value: str = "numbers"
    num_keys: int = 1
    num_values: int = 1
    num_queries: int = 1


SPECS = {
    "niah_single_1": NiahSpec("noise"),
    "niah_single_2": NiahSpec("essay"),
    "niah_single_3": NiahSpec("essay", value="uuids"),
    "niah_multikey_1": NiahSpec("essay", num_keys=4),
    "niah_multikey_2": NiahSpec("needle"),
    "niah_multikey_3": NiahSpec("needle", key="uuids", value="uuids"),
    "niah_multivalue": NiahSpec("essay", num_values=4),
    "niah_multiquery": NiahSpec("essay", num_queries=4),
}


def _singular(text: str) -> str:
    # RULER's rewording when one value is asked for ("Some ... are all" -> "A ... is"); order matters.
    for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
        text = text.replace(old, new)
    return text


def niah_sample(spec: NiahSpec, rng: random.Random, n: int, ctx: TaskContext) -> Sample:
    """One NIAH sample with a haystack of ``n`` units (noise sentences, essay words or distractor needles).

    Args:
        spec: the variant.
        rng: the sample's generator (fresh for every call of the size search).
        n: haystack size.
        ctx: the essay words for ``essay`` haystacks.
    """
    num_keys = max(spec.num_keys, spec.num_queries)
    keys, values, needles = [], [], []
    for _ in range(num_keys):
        keys.append(random_value(spec.key, rng))
        values.append([random_value(spec.value, rng) for _ in range(spec.num_values)])
        needles += [NEEDLE.format(type_v=spec.value, key=keys[-1], value=v) for v in values[-1]]
    rng.shuffle(needles)
    if spec.haystack == "essay":
        context = " ".join(insert_at_depths(sentences(essay_text(list(ctx.essay), n)), needles, rng))
    else:
        if spec.haystack == "noise":
            lines = [NOISE] * n
        else:  # distractor needles: the same sentence with other random keys and values
            lines = [
                NEEDLE.format(type_v=spec.value, key=random_value(spec.key, rng), value=random_value(spec.value, rng))
                for _ in range(n)
            ]
        context = "\n".join(insert_at_random_lines(lines, needles, rng))
    asked = rng.sample(range(num_keys), spec.num_queries)
    queries = [keys[i] for i in asked]
    answers = [v for i in asked for v in values[i]]
    query = queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]
    template, prefix, type_v = TEMPLATE, ANSWER_PREFIX, spec.value
    if spec.num_queries * spec.num_values == 1:
        template, prefix, type_v = _singular(template), _singular(prefix), type_v[:-1]
    return Sample(template.format(type_v=type_v, context=context, query=query), prefix.format(type_v=type_v, query=query), answers)


def _builder(spec: NiahSpec):
    def build(rng: random.Random, n: int, ctx: TaskContext) -> Sample:
        return niah_sample(spec, rng, n, ctx)

    return build


TASKS = {
    name: RulerTask(name, "niah", TOKENS_TO_GENERATE, "all", _builder(spec), needs_essay=spec.haystack == "essay")
    for name, spec in SPECS.items()
}
