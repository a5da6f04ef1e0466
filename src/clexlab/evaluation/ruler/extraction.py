"""RULER's aggregation tasks: common-words (cwe) and frequent-words (fwe) extraction.

* cwe: a numbered list of words where ten words repeat more often than the
  rest; name the ten. Words come from the wonderwords lists (nouns,
  adjectives and verbs). Below 4096 tokens the ten repeat 6 times and the
  others once, with a solved example of 20 words (3 and 1 repeats); from 4096
  on, 30 and 3 repeats with an example of 40 words (10 and 3), as in RULER.
* fwe: "coded" 6-letter words drawn with Zipf frequencies (``alpha`` 2), the
  most frequent replaced by dots; name the three most frequent words. The
  vocabulary holds ``(length - answer budget) // 50`` words, as in RULER.

Both score with string_match_all.
"""

from __future__ import annotations

import math
import random
import string

from clexlab.evaluation.ruler.base import RulerTask, Sample, TaskContext
from clexlab.evaluation.ruler.words import extraction_words, wonderwords_list

CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
)
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
NUM_COMMON = 10


def _pick_words(rng: random.Random, count: int) -> list[str]:
    vocab = extraction_words()
    if count <= len(vocab):
        return rng.sample(vocab, count)
    # Longer lists than the vocabulary (about 100k tokens and up): RULER switches to a bigger
    # English list it downloads; here distinct adjective-noun compounds are generated instead.
    adjs, nouns = wonderwords_list("adjectivelist"), wonderwords_list("nounlist")
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < count:
        word = f"{rng.choice(adjs)}-{rng.choice(nouns)}"
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def _numbered(words: list[str]) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


def _word_list(rng: random.Random, count: int, common_repeats: int, other_repeats: int) -> tuple[str, list[str]]:
    words = _pick_words(rng, count)
    common, others = words[:NUM_COMMON], words[NUM_COMMON:]
    items = common * common_repeats + others * other_repeats
    rng.shuffle(items)
    return _numbered(items), common


def cwe_sample(rng: random.Random, n: int, ctx: TaskContext) -> Sample:
    """A common-words sample over ``n`` distinct words (the ten common ones included), after one solved example."""
    short = ctx.length < 4096
    shot_words, shot_common, shot_other = (20, 3, 1) if short else (40, 10, 3)
    common_repeats, other_repeats = (6, 1) if short else (30, 3)
    shot_context, shot_answer = _word_list(rng, shot_words, shot_common, shot_other)
    context, answer = _word_list(rng, max(n, NUM_COMMON), common_repeats, other_repeats)
    shot = CWE_TEMPLATE.format(context=shot_context) + CWE_PREFIX + " " + _numbered(shot_answer)
    return Sample(shot + "\n" + CWE_TEMPLATE.format(context=context), CWE_PREFIX, answer)


def zeta(alpha: float, terms: int = 1000) -> float:
    """Riemann zeta(alpha) for alpha > 1: a partial sum plus the Euler-Maclaurin tail (error < 1e-12)."""
    head = math.fsum(k**-alpha for k in range(1, terms))
    n = float(terms)
    return head + n ** (1 - alpha) / (alpha - 1) + 0.5 * n**-alpha + alpha * n ** (-alpha - 1) / 12


def coded_vocab(rng: random.Random, size: int, word_length: int = 6) -> list[str]:
    """``size`` distinct random lower-case words, shuffled; the first becomes the noise word ``...``."""
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choices(string.ascii_lowercase, k=word_length)))
    vocab = sorted(words)
    rng.shuffle(vocab)
    vocab[0] = "..."
    return vocab


def fwe_sample(rng: random.Random, n: int, ctx: TaskContext, alpha: float = 2.0) -> Sample:
    """A frequent-words sample: about ``n`` coded words with Zipf(``alpha``) counts; the answer is words 2-4 by rank."""
    size = max((ctx.length - FWE_TOKENS) // 50, 5)
    vocab = coded_vocab(rng, size)
    norm = zeta(alpha)
    text = [w for k, w in enumerate(vocab, start=1) for _ in range(int(n * k**-alpha / norm))]
    rng.shuffle(text)
    return Sample(FWE_TEMPLATE.format(context=" ".join(text)), FWE_PREFIX, vocab[1:4])


FWE_TOKENS = 50
TASKS = {
    "cwe": RulerTask("cwe", "common_words_extraction", 120, "all", cwe_sample),
    "fwe": RulerTask("fwe", "freq_words_extraction", FWE_TOKENS, "all", fwe_sample),
}
