"""LongBench's metrics, on the libraries LongBench uses: ``rouge``, ``fuzzywuzzy`` and ``jieba``.

Each metric scores one prediction against one reference in [0, 1]; a record's
score is the best over its references (:func:`score_record`). The
definitions follow THUDM/LongBench's ``LongBench/metrics.py``:

* ``qa_f1``: token F1 after SQuAD normalisation (lower case, no punctuation,
  no articles, single spaces); ``qa_f1_zh``: F1 over jieba words with Chinese
  and English punctuation and all spaces removed.
* ``rouge``: ROUGE-L F of the ``rouge`` package (0 when it refuses, e.g. an
  empty prediction); ``rouge_zh``: the same over jieba words.
* ``classification``: the class names found in the prediction, minus those
  that are only part of the reference; 1/k when the reference is among the k left.
* ``retrieval`` / ``retrieval_zh``: the share of numbers in the prediction
  that equal the paragraph number of the reference ("Paragraph 12", "段落12").
* ``count``: the share of numbers in the prediction equal to the reference.
* ``code_sim``: ``fuzz.ratio`` / 100 between the reference and the first line of
  the prediction that has no backtick, ``#`` or ``//``.
"""

from __future__ import annotations

import logging
import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

_CN_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_EN_PUNCTUATION = frozenset(string.punctuation)
_ALL_PUNCTUATION = frozenset(string.punctuation + _CN_PUNCTUATION)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"\d+")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in _EN_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_zh_answer(text: str) -> str:
    """Chinese normalisation: lower case, Chinese and English punctuation and every space removed."""
    text = "".join(ch for ch in text.lower() if ch not in _ALL_PUNCTUATION)
    return "".join(text.split())


def _jieba_words(text: str) -> list[str]:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading banner otherwise goes to stderr
    return list(jieba.cut(text, cut_all=False))


def f1(prediction: Sequence[str], reference: Sequence[str]) -> float:
    """F1 of two token bags."""
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, reference: str, **_) -> float:
    """Token F1 of normalised English answers."""
    return f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def qa_f1_zh(prediction: str, reference: str, **_) -> float:
    """Token F1 of Chinese answers over jieba words."""

    def words(text: str) -> list[str]:
        return [w for w in (normalize_zh_answer(t) for t in _jieba_words(text)) if w]

    return f1(words(prediction), words(reference))


def rouge(prediction: str, reference: str, **_) -> float:
    """ROUGE-L F (the ``rouge`` package); 0 when it cannot score the pair."""
    from rouge import Rouge

    try:
        return float(Rouge().get_scores([prediction], [reference], avg=True)["rouge-l"]["f"])
    except (ValueError, RecursionError):  # empty hypothesis or reference; pathological lengths
        return 0.0


def rouge_zh(prediction: str, reference: str, **_) -> float:
    """ROUGE-L F over jieba words joined by spaces."""
    return rouge(" ".join(_jieba_words(prediction)), " ".join(_jieba_words(reference)))


def classification(prediction: str, reference: str, all_classes: Sequence[str] | None = None, **_) -> float:
    """1/k if the reference is among the k class names matched in the prediction, else 0.

    A matched name contained in (but different from) the reference is
    dropped. LongBench drops them while iterating over the same list, which
    skips the name right after each one dropped; that walk is kept here so
    scores equal the published ones.
    """
    matched = [name for name in all_classes or [] if name in prediction]
    i = 0
    while i < len(matched):
        name = matched[i]
        if name in reference and name != reference:
            matched.remove(name)  # the first equal entry, as list.remove does there
        i += 1
    return 1.0 / len(matched) if reference in matched else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = _NUMBER.findall(prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval(prediction: str, reference: str, **_) -> float:
    """Share of numbers in the prediction equal to the reference's "Paragraph N"."""
    return _share_equal(prediction, re.findall(r"Paragraph (\d+)", reference)[0])


def retrieval_zh(prediction: str, reference: str, **_) -> float:
    """Share of numbers in the prediction equal to the reference's "段落N"."""
    return _share_equal(prediction, re.findall(r"段落(\d+)", reference)[0])


def count(prediction: str, reference: str, **_) -> float:
    """Share of numbers in the prediction equal to the reference count."""
    return _share_equal(prediction, str(reference))


def code_sim(prediction: str, reference: str, **_) -> float:
    """``fuzz.ratio`` / 100 of the first code line of the prediction (no backtick, ``#`` or ``//``) and the reference."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "slow pure-python SequenceMatcher": LongBench's own setting
        from fuzzywuzzy import fuzz
    line = next((x for x in prediction.lstrip("\n").split("\n") if "`" not in x and "#" not in x and "//" not in x), "")
    return fuzz.ratio(line, reference) / 100


METRICS: dict[str, Callable[..., float]] = {
    "qa_f1": qa_f1,
    "qa_f1_zh": qa_f1_zh,
    "rouge": rouge,
    "rouge_zh": rouge_zh,
    "classification": classification,
    "retrieval": retrieval,
    "retrieval_zh": retrieval_zh,
    "count": count,
    "code_sim": code_sim,
}


def score_record(metric: str, prediction: str, references: Sequence[str], all_classes=None, first_line: bool = False) -> float:
    """One record's score in [0, 1]: the best over its references (only the first line for ``first_line`` datasets)."""
    if first_line:
        prediction = prediction.lstrip("\n").split("\n")[0]
    fn = METRICS[metric]
    return max((fn(prediction, ref, all_classes=all_classes) for ref in references), default=0.0)
