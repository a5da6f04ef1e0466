"""Synthetic retrieval documents mixed into the training windows, so a small model learns to retrieve.

A 2-layer byte-level model trained on source code never sees a question
whose answer is a string far back in its context, so passkey and NIAH mean
nothing on it. :class:`RetrievalMix` replaces a set fraction of the training
windows by windows that end with a retrieval document:

* ``passkey``: the standard passkey prompt (noise filler, the key at a random
  depth) followed by the key;
* ``niah``: a RULER needle-in-a-haystack prompt (any of its eight variants:
  noise, distractor-needle or *natural* haystack, the latter cut from the
  window's own corpus text) followed by the value(s);
* ``kv``: a list of ``key: value`` pairs, then several lookups answered
  in turn;
* ``copy``: short random strings, each written 2-4 times (the induction-head
  task under all the others);
* ``numbers``: short lists of 7-digit numbers, each written again: dense
  copying of digits, which the other kinds teach a byte model slowly (see
  :func:`numbers_document`).

Each replaced window is ``[natural text][end-of-document][retrieval document]``
with the document ending at the window's last token, its length drawn so the
distance between needle and question varies up to L. Which windows are
replaced, and what they hold, is a function of ``(seed, window index)`` only:
the same on every rank, every run and every resume. Validation and test
windows are never touched, so perplexity stays comparable across runs.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from clexlab.data.tokenizer import Tokenizer
from clexlab.utils.errors import UserError

KINDS = ("passkey", "niah", "kv", "copy", "numbers")
DEFAULT_KINDS = ("passkey", "niah", "kv", "copy")
# A document of one kind as a function of its filler size n (token ids, longer as n grows).
Builder = Callable[[int], list[int]]


def _uniform(seed: int, index: int) -> float:
    """A uniform number in [0, 1) from ``(seed, index)``, stable across processes."""
    digest = hashlib.sha1(f"retrieval-pick:{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class RetrievalMix:
    """The data option: which fraction of training windows becomes retrieval documents, and of which kinds.

    Args:
        fraction: share of training windows replaced (0 disables the mix).
        kinds: document kinds drawn uniformly from the list: ``passkey``, ``niah``, ``kv``, ``copy``, ``numbers``.
        min_tokens: shortest retrieval document in tokens (longer ones are drawn up to the window).
    """

    def __init__(self, fraction: float = 0.25, kinds: Sequence[str] = DEFAULT_KINDS, min_tokens: int = 64) -> None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise UserError(f"data.retrieval.fraction must be in [0, 1], got {fraction}")
        unknown = [k for k in kinds if k not in KINDS]
        if not kinds or unknown:
            raise UserError(f"data.retrieval.kinds must be a non-empty subset of {list(KINDS)}, got {list(kinds)}")
        if int(min_tokens) < 1:
            raise UserError(f"data.retrieval.min_tokens must be >= 1, got {min_tokens}")
        self.fraction = float(fraction)
        self.kinds = tuple(kinds)
        self.min_tokens = int(min_tokens)

    def wrap(self, windows: Dataset, tokenizer: Tokenizer, seed: int) -> Dataset:
        """``windows`` with the chosen ones replaced (unchanged when the fraction is 0)."""
        return RetrievalWindows(windows, tokenizer, self, seed) if self.fraction > 0 else windows


class RetrievalWindows(Dataset):
    """Training windows where a seeded fraction holds retrieval documents (see the module docstring)."""

    def __init__(self, windows: Dataset, tokenizer: Tokenizer, mix: RetrievalMix, seed: int) -> None:
        self.windows, self.tokenizer, self.mix, self.seed = windows, tokenizer, mix, int(seed)
        self.seq_len = int(windows.seq_len)

    def __len__(self) -> int:
        return len(self.windows)

    def is_retrieval(self, index: int) -> bool:
        """Whether window ``index`` holds a retrieval document."""
        return _uniform(self.seed, index) < self.mix.fraction

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.windows[index]
        if not self.is_retrieval(index):
            return item
        natural = torch.cat([item["input_ids"], item["labels"][-1:]]).tolist()
        tokens = retrieval_window(self.tokenizer, natural, self.seq_len + 1, self.mix, random.Random(f"retrieval:{self.seed}:{index}"))
        chunk = torch.tensor(tokens, dtype=torch.int64)
        return {"input_ids": chunk[:-1], "labels": chunk[1:]}


def retrieval_window(tokenizer: Tokenizer, natural: list[int], size: int, mix: RetrievalMix, rng: random.Random) -> list[int]:
    """``size`` tokens: the head of ``natural``, end-of-document, then a retrieval document ending the window.

    The document's length is drawn between its shortest form (or
    ``mix.min_tokens``) and the window, then its filler is sized to it; a
    kind that cannot be that short gives way to a key-value list.
    """
    longest = size - 1  # one token for the separator
    kind = rng.choice(mix.kinds)
    build = DOCUMENTS[kind](tokenizer, natural, longest, random.Random(rng.getrandbits(64)))
    if build is None:
        build = kv_document(tokenizer, natural, longest, random.Random(rng.getrandbits(64)))
    shortest = len(build(0))
    target = rng.randint(min(max(mix.min_tokens, shortest), longest), longest)
    doc = _fit(build, target)
    return natural[: size - 1 - len(doc)] + [tokenizer.eos_token_id] + doc


def _fit(build: Builder, target: int) -> list[int]:
    """The longest ``build(n)`` (token ids, growing with n) of at most ``target`` tokens."""
    from clexlab.evaluation.passkey import (
        longest_fit,  # the evaluation's own gallop-and-bisect search
    )

    return build(longest_fit(lambda n: len(build(n)), target)) if len(build(0)) <= target else build(0)[-target:]


def passkey_document(tokenizer: Tokenizer, natural: list[int], longest: int, rng: random.Random) -> Builder | None:
    """The passkey prompt with ``n`` filler words and the key at a random depth, answered: `` 12345.``"""
    from clexlab.evaluation.passkey import QUESTION, TASK, filler_words, info_line

    key, depth = str(rng.randint(10000, 99999)), rng.random()

    def build(n: int) -> list[int]:
        words = filler_words(n)
        cut = round(depth * n)
        text = f"{TASK}\n" + " ".join(words[:cut]) + f"\n{info_line(key)}\n" + " ".join(words[cut:]) + f"\n{QUESTION} {key}."
        return tokenizer.encode(text)

    return build if len(build(0)) <= longest else None


def niah_document(tokenizer: Tokenizer, natural: list[int], longest: int, rng: random.Random) -> Builder | None:
    """A RULER NIAH prompt with a haystack of ``n`` units, answered; a random variant among those that fit.

    Natural haystacks ("essay" variants) are cut from the window's own text.
    """
    from clexlab.evaluation.ruler.base import TaskContext
    from clexlab.evaluation.ruler.niah import SPECS, niah_sample

    words = tokenizer.decode(natural).split()
    seed = rng.getrandbits(64)

    def builder(spec) -> Builder:
        def build(n: int) -> list[int]:
            sample = niah_sample(spec, random.Random(seed), n, TaskContext(longest, words))
            return tokenizer.encode(sample.task_text + sample.answer_prefix + " " + ", ".join(sample.answers) + ".")

        return build

    names = sorted(SPECS)
    rng.shuffle(names)
    return next((b for b in map(builder, (SPECS[k] for k in names)) if len(b(0)) <= longest), None)


def kv_document(tokenizer: Tokenizer, natural: list[int], longest: int, rng: random.Random) -> Builder:
    """``n + 1`` lines ``key: value``, then each key looked up once in random order: ``key? value``."""
    from clexlab.evaluation.ruler.words import random_number, random_word

    seed = rng.getrandbits(64)

    def build(n: int) -> list[int]:
        r = random.Random(seed)
        pairs = [(random_word(r), random_number(r, r.choice((5, 7)))) for _ in range(n + 1)]
        asked = r.sample(pairs, len(pairs))
        lines = ["Remember each value.", *(f"{k}: {v}" for k, v in pairs), "Look up the values.", *(f"{k}? {v}" for k, v in asked)]
        return tokenizer.encode("\n".join(lines) + "\n")

    return build


def copy_document(tokenizer: Tokenizer, natural: list[int], longest: int, rng: random.Random) -> Builder:
    """``n + 1`` short random strings, each written 2-4 times: the plainest retrieval (copy what came before).

    It is what induction heads (find the earlier occurrence of the current
    context, copy what followed it) are made of, and it gives every repeated
    character a target only retrieval can predict. Short strings written
    several times make those targets dense: the tiny model learns to copy
    from them within a few hundred steps, long before passkeys alone teach it.
    """
    seed = rng.getrandbits(64)
    alphabet = string.ascii_letters + string.digits

    def build(n: int) -> list[int]:
        r = random.Random(seed)
        lines = ["Copy each line."]
        for _ in range(n + 1):
            text = "".join(r.choices(alphabet, k=r.randint(6, 16)))
            lines += [text] * r.randint(2, 4)
        return tokenizer.encode("\n".join(lines) + "\n")

    return build


def numbers_document(tokenizer: Tokenizer, natural: list[int], longest: int, rng: random.Random) -> Builder:
    """``n + 1`` lines ``Numbers: a b c. Again: a b c.``, each with 1-4 random 7-digit numbers.

    Every digit of an ``Again`` list is predictable only by copying the digit
    that followed the same digit a few tokens earlier: the copy a passkey
    answer needs, on every digit instead of five per document. A byte model
    trained on code treats digits as near-interchangeable and learns this
    copy slowly from the other kinds; on the tiny model, 128-token windows of
    these lines taught it in a few hundred steps, while one long list per
    window, or lines of up to 12 numbers, taught a copy that did not carry
    over to passkey prompts (README, "Retrieval a CPU-sized model can learn";
    ``benchmarks/retrieval_learning.py``).
    """
    seed = rng.getrandbits(64)

    def build(n: int) -> list[int]:
        r = random.Random(seed)
        lines = []
        for _ in range(n + 1):
            numbers = " ".join(str(r.randint(10**6, 10**7 - 1)) for _ in range(r.randint(1, 4)))
            lines.append(f"Numbers: {numbers}. Again: {numbers}.")
        return tokenizer.encode("\n".join(lines) + "\n")

    return build


DOCUMENTS = {"passkey": passkey_document, "niah": niah_document, "kv": kv_document, "copy": copy_document, "numbers": numbers_document}


def describe(windows: RetrievalWindows, index: int) -> str:
    """The text of window ``index`` as the model sees it (for debugging and tests)."""
    item = windows[index]
    return windows.tokenizer.decode(np.asarray(torch.cat([item["input_ids"], item["labels"][-1:]])).tolist())
