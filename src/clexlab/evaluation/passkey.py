"""Passkey retrieval: find a 5-digit key hidden at a chosen depth in filler text.

The standard prompt (Mohtashami & Jaggi's landmark attention, used by LongLoRA,
YaRN and CLEX): a task description, repeated filler ("The grass is green. ..."),
the line "The pass key is 12345. Remember it. 12345 is the pass key." at a
fraction ``depth`` of the filler, more filler, then "What is the pass key? The
pass key is". The model decodes greedily; a sample is correct when the first
5-digit run of its continuation is the key.

Prompt lengths are measured in tokens of the model's own tokenizer: the
number of filler words is searched so that the whole prompt is as long as
possible without exceeding the target (within one filler word of it). Every
random choice comes from ``(seed, length, depth, sample)`` only, so the same
call on any machine builds the same prompts. Pure torch and transformers'
``generate``; no Lightning, so a training callback can call
:func:`passkey_retrieval` directly.
"""

from __future__ import annotations

import logging
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from clexlab.data.tokenizer import Tokenizer
from clexlab.evaluation.kv_policies import KVPolicy, use_kv_policy
from clexlab.utils.errors import UserError

log = logging.getLogger("clexlab")

TASK = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"
_FILLER_WORDS = FILLER.split()
_FIVE_DIGITS = re.compile(r"(?<![0-9])[0-9]{5}(?![0-9])")


def mean_or_none(row: Sequence[float | None]) -> float | None:
    """Mean of the cells that ran, None if none did."""
    values = [v for v in row if v is not None]
    return sum(values) / len(values) if values else None


def info_line(key: str) -> str:
    """The line that hides the key."""
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def filler_words(n: int) -> list[str]:
    """The first ``n`` words of the endlessly repeated filler."""
    return [_FILLER_WORDS[i % len(_FILLER_WORDS)] for i in range(n)]


def passkey_for(seed: int, length: int, depth: float, sample: int) -> str:
    """The 5-digit key of one sample, a function of its coordinates only."""
    # A string seed is hashed with SHA-512 by ``random``: stable across processes and platforms.
    return str(random.Random(f"passkey:{seed}:{length}:{depth:.6f}:{sample}").randint(10000, 99999))


@dataclass
class PasskeyPrompt:
    """One prompt: its text, token ids, the key, and where the key landed.

    Attributes:
        text: the prompt text (without the optional prefix ids).
        ids: token ids fed to the model (``prefix_ids`` + the encoded text).
        key: the 5-digit pass key.
        depth: the requested depth.
        key_depth: the depth reached: filler tokens before the key line over all filler tokens.
        filler_words: number of filler words in the prompt.
    """

    text: str
    ids: list[int]
    key: str
    depth: float
    key_depth: float
    filler_words: int


def _text(n_words: int, depth: float, key: str) -> tuple[str, str, str]:
    words = filler_words(n_words)
    cut = round(depth * n_words)
    head = f"{TASK}\n" + " ".join(words[:cut])
    tail = " ".join(words[cut:]) + f"\n{QUESTION}"
    return head, f"\n{info_line(key)}\n", tail


def longest_fit(size, length: int, hint: int = 0) -> int:
    """Largest ``n >= 0`` with ``size(n) <= length``, given ``size(0) <= length``.

    Token counts grow with the number of words (a BPE merge at a boundary
    shifts them by a token or so), so gallop from ``hint`` (the answer for a
    previous key of the same cell is usually right within a word: two encodes)
    to a bracket, then bisect.
    """
    lo = max(int(hint), 0)
    if lo and size(lo) > length:
        hi, step = lo, 1
        lo = max(hi - step, 0)
        while lo and size(lo) > length:
            hi, step = lo, step * 2
            lo = max(hi - step, 0)
    else:
        step = 1
        hi = lo + step
        while size(hi) <= length:
            lo, step = hi, step * 2
            hi = lo + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if size(mid) <= length:
            lo = mid
        else:
            hi = mid
    return lo


def build_prompt(
    tokenizer: Tokenizer,
    length: int,
    depth: float,
    key: str,
    prefix_ids: Sequence[int] = (),
    hint: int = 0,
) -> PasskeyPrompt:
    """The longest standard prompt of at most ``length`` tokens with ``key`` at ``depth``.

    Args:
        tokenizer: the model's tokenizer (its ``encode`` adds no special tokens).
        length: target prompt length in tokens, ``prefix_ids`` included.
        depth: where the key line goes, as a fraction of the filler (0 = first, 1 = last).
        key: the pass key.
        prefix_ids: ids put before the text (e.g. the BOS token of a LLaMA tokenizer).
        hint: a guess of the number of filler words (speeds up the search only).

    Raises:
        UserError: if ``length`` cannot even hold the prompt without filler, or depth is outside [0, 1].
    """
    if not 0.0 <= depth <= 1.0:
        raise UserError(f"passkey depths must be in [0, 1], got {depth}")
    prefix = list(prefix_ids)

    def size(n: int) -> int:
        return len(prefix) + len(tokenizer.encode("".join(_text(n, depth, key))))

    if size(0) > length:
        raise UserError(f"passkey length {length} is shorter than the prompt without filler ({size(0)} tokens)")
    n = longest_fit(size, length, hint)
    head, info, tail = _text(n, depth, key)
    ids = prefix + tokenizer.encode(head + info + tail)
    filler_before = len(tokenizer.encode(head)) - len(tokenizer.encode(f"{TASK}\n"))
    filler_total = filler_before + len(tokenizer.encode(tail)) - len(tokenizer.encode(f"\n{QUESTION}"))
    key_depth = filler_before / filler_total if filler_total > 0 else depth
    return PasskeyPrompt(head + info + tail, ids, key, depth, key_depth, n)


def min_prompt_tokens(tokenizer: Tokenizer, prefix_ids: Sequence[int] = ()) -> int:
    """Tokens of the prompt without any filler: shorter lengths cannot hold a passkey prompt."""
    return len(prefix_ids) + len(tokenizer.encode("".join(_text(0, 0.0, "00000"))))


def parse_passkey(text: str) -> str | None:
    """The first run of exactly five digits in ``text`` (full-width digits too), or None.

    Longer digit runs are not cut down to five: "123456" answers neither
    "12345" nor "23456".
    """
    normalized = unicodedata.normalize("NFKC", text)
    match = _FIVE_DIGITS.search(normalized)
    return match.group(0) if match else None


@dataclass
class PasskeyResult:
    """Exact-match accuracy per ``(length, depth)`` cell, rows = lengths, columns = depths.

    A cell is ``None`` when its length cannot hold the prompt without filler
    (see :func:`min_prompt_tokens`); it was not run.
    """

    lengths: list[int]
    depths: list[float]
    accuracy: list[list[float | None]]
    n_samples: int
    seed: int
    answers: list[dict] = field(default_factory=list)

    def mean_accuracy(self, length: int) -> float | None:
        """Accuracy at one length, averaged over depths (None when the length was skipped)."""
        return mean_or_none(self.accuracy[self.lengths.index(length)])

    def to_dict(self) -> dict:
        """The ``passkey`` entry of ``results.json`` (without per-sample answers)."""
        return {
            "lengths": list(self.lengths),
            "depths": list(self.depths),
            "accuracy": [list(row) for row in self.accuracy],
            "n_samples": self.n_samples,
            "seed": self.seed,
        }


@torch.no_grad()
def passkey_retrieval(
    model: nn.Module,
    tokenizer: Tokenizer,
    lengths: Sequence[int],
    depths: Sequence[float],
    n_samples: int = 5,
    seed: int = 0,
    max_new_tokens: int = 10,
    prefix_ids: Sequence[int] = (),
    progress: bool = False,
    kv_policy: KVPolicy | None = None,
) -> PasskeyResult:
    """Greedy passkey retrieval over ``lengths`` x ``depths``, ``n_samples`` keys per cell.

    Args:
        model: a transformers causal LM (``generate`` is used; CLEX models stay exact with the cache).
        tokenizer: the model's tokenizer.
        lengths: prompt lengths in tokens.
        depths: key depths in ``[0, 1]``.
        n_samples: prompts (keys) per cell.
        seed: seeds the keys.
        max_new_tokens: tokens generated per prompt.
        prefix_ids: ids before every prompt (e.g. ``[bos_token_id]``).
        progress: show a progress bar.
        kv_policy: generate under this evaluation-time KV policy (None: full attention); the
            prompt is prefilled in the policy's chunks, every new token attends per the policy.

    Returns:
        The accuracy grid, with each sample's key and answer in ``answers``;
        lengths too short for the prompt without filler get ``None`` cells (warned).
    """
    if n_samples < 1:
        raise UserError(f"passkey samples must be >= 1, got {n_samples}")
    device = next(model.parameters()).device
    pad = getattr(tokenizer, "eos_token_id", None)
    cells = [(n, d) for n in lengths for d in depths]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="passkey", leave=False)
    was_training = model.training
    model.eval()
    correct: dict[tuple[int, float], int] = {}
    answers: list[dict] = []
    shortest = min_prompt_tokens(tokenizer, prefix_ids)
    too_short = sorted({int(n) for n in lengths if int(n) < shortest})
    if too_short:
        log.warning("passkey: lengths %s are shorter than the prompt without filler (%d tokens): skipped", too_short, shortest)
    try:
        with use_kv_policy(model, kv_policy):  # None: full attention, nothing changes
            for length, depth in cells:
                if int(length) < shortest:
                    continue
                hits, hint = 0, 0
                for sample in range(n_samples):
                    key = passkey_for(seed, int(length), float(depth), sample)
                    prompt = build_prompt(tokenizer, int(length), float(depth), key, prefix_ids, hint)
                    hint = prompt.filler_words
                    ids = torch.tensor([prompt.ids], device=device)
                    out = model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=pad,
                        eos_token_id=pad,
                    )
                    continuation = tokenizer.decode(out[0, ids.shape[1] :].tolist())
                    answer = parse_passkey(continuation)
                    hits += answer == key
                    answers.append(
                        {"length": int(length), "depth": float(depth), "sample": sample, "key": key,
                         "answer": answer, "prompt_tokens": len(prompt.ids)}
                    )
                correct[(int(length), float(depth))] = hits
    finally:
        model.train(was_training)
    grid = [
        [correct[(int(n), float(d))] / n_samples if (int(n), float(d)) in correct else None for d in depths]
        for n in lengths
    ]
    return PasskeyResult([int(n) for n in lengths], [float(d) for d in depths], grid, n_samples, seed, answers)
