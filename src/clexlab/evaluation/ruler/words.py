"""Words, needle values and haystacks of the RULER tasks, all local and seeded.

RULER draws its keys and word lists from the ``wonderwords`` package, whose
noun, adjective and verb lists ship inside the wheel (``wonderwords/assets``);
they are read from there, never fetched. Needle values are 7-digit numbers,
``adjective-noun`` words or UUIDs drawn from a ``random.Random`` the caller
seeds, so every sample is a function of its coordinates only.

The essay haystack of RULER (Paul Graham's essays, downloaded) is replaced by
the held-out split of the run's own corpus: its documents, whitespace-split
into words (as RULER does with the essays), then cut into sentences.
"""

from __future__ import annotations

import functools
import random
import re
import uuid
from collections.abc import Iterable
from importlib import resources

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
# RULER inserts needles at depths drawn from 40 evenly spaced percentages.
DEPTHS = [round(100 * i / 39) for i in range(40)]
# A sentence ends at . ! or ? followed by whitespace (RULER uses nltk's sent_tokenize on prose;
# this rule needs no model download and cuts code and prose alike).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@functools.cache
def wonderwords_list(name: str) -> tuple[str, ...]:
    """One of the word lists inside the ``wonderwords`` wheel: ``nounlist``, ``adjectivelist`` or ``verblist``."""
    text = (resources.files("wonderwords") / "assets" / f"{name}.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@functools.cache
def extraction_words() -> tuple[str, ...]:
    """RULER's common-words vocabulary: nouns, adjectives and verbs, deduplicated and sorted."""
    return tuple(sorted(set(wonderwords_list("nounlist") + wonderwords_list("adjectivelist") + wonderwords_list("verblist"))))


def random_number(rng: random.Random, digits: int = 7) -> str:
    """A random ``digits``-digit number without a leading zero."""
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def random_word(rng: random.Random) -> str:
    """An ``adjective-noun`` key, as RULER builds them from the wonderwords lists."""
    return f"{rng.choice(wonderwords_list('adjectivelist'))}-{rng.choice(wonderwords_list('nounlist'))}"


def random_uuid(rng: random.Random) -> str:
    """A version-4 UUID from ``rng`` (not from the system's entropy)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


GENERATORS = {"numbers": random_number, "words": random_word, "uuids": random_uuid}


def random_value(kind: str, rng: random.Random) -> str:
    """A needle key or value of ``kind``: ``numbers``, ``words`` or ``uuids``."""
    return GENERATORS[kind](rng)


def essay_words(documents: Iterable[str], max_words: int) -> list[str]:
    """The first ``max_words`` whitespace-separated words of ``documents`` (RULER's essay preprocessing)."""
    words: list[str] = []
    for text in documents:
        words.extend(text.split())
        if len(words) >= max_words:
            break
    return words[:max_words]


def essay_text(words: list[str], n: int) -> str:
    """The first ``n`` words of the essay, repeated when it is shorter (as RULER does)."""
    if n <= 0 or not words:
        return ""
    repeats = -(-n // len(words))
    return " ".join((words * repeats)[:n])


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s] if text.strip() else []


def insert_at_depths(parts: list[str], inserts: list[str], rng: random.Random) -> list[str]:
    """Put each of ``inserts`` between ``parts`` at a depth drawn from :data:`DEPTHS` (RULER's essay rule).

    The depths are sampled without replacement, so two inserts rarely share a
    gap; inserts keep their order.
    """
    depths = rng.sample(DEPTHS, len(inserts)) if len(inserts) <= len(DEPTHS) else [rng.choice(DEPTHS) for _ in inserts]
    cuts = [0, *sorted(int(len(parts) * d / 100) for d in depths), len(parts)]
    out: list[str] = []
    for i in range(1, len(cuts)):
        out.append(" ".join(parts[cuts[i - 1] : cuts[i]]))
        if i - 1 < len(inserts):
            out.append(inserts[i - 1])
    return [p for p in out if p]


def insert_at_random_lines(lines: list[str], inserts: list[str], rng: random.Random) -> list[str]:
    """Insert each of ``inserts`` at a random index of ``lines`` (RULER's noise and needle haystacks)."""
    lines = list(lines)
    indexes = sorted(rng.sample(range(len(lines)), len(inserts)), reverse=True) if len(lines) >= len(inserts) else [0] * len(inserts)
    for index, item in zip(indexes, inserts):
        lines.insert(index, item)
    return lines
