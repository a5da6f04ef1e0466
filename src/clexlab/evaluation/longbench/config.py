"""LongBench's datasets: prompt template, maximum output length, metric, and the no-chat set.

The templates and output lengths are THUDM/LongBench's (``LongBench/config/
dataset2prompt.json`` and ``dataset2maxlen.json``), kept verbatim (typos
included: they are part of the benchmark); the metric names follow
``LongBench/eval.py``. Six datasets are scored without a chat template
(few-shot and code completion, where LongBench found chat wrappers hurt), and
four score only the first line of a prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

# LongBench feeds these to chat models without their chat template.
NO_CHAT = frozenset({"trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p"})
# LongBench scores only the first line of these predictions (few-shot outputs run on).
FIRST_LINE = frozenset({"trec", "triviaqa", "samsum", "lsht"})
# LongBench stops these generations at a newline (after at least one token: the model repeats "\nDialogue").
STOP_AT_NEWLINE = frozenset({"samsum"})
# The fields of a LongBench record.
FIELDS = ("input", "context", "answers", "length", "dataset", "language", "all_classes", "_id")


@dataclass(frozen=True)
class LongBenchDataset:
    """One LongBench dataset.

    Attributes:
        name: the dataset (and its file's name, ``<name>.jsonl``; LongBench-E: ``<name>_e.jsonl``).
        metric: the metric's name in :data:`clexlab.evaluation.longbench.metrics.METRICS`.
        max_new_tokens: LongBench's maximum output length.
        prompt: the template, with ``{context}`` and ``{input}``.
    """

    name: str
    metric: str
    max_new_tokens: int
    prompt: str

    @property
    def chat(self) -> bool:
        """Whether a chat template applies (LongBench leaves six datasets plain)."""
        return self.name not in NO_CHAT

    @property
    def stops_at_newline(self) -> bool:
        """Whether generation stops at the first newline."""
        return self.name in STOP_AT_NEWLINE

    @property
    def first_line(self) -> bool:
        """Whether only the first line of a prediction is scored."""
        return self.name in FIRST_LINE


# hotpotqa, 2wikimqa and musique share one template.
_MULTI_PASSAGE_QA = (
    "Answer the question based on the given passages. Only give me the answer and do not "
    "output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the "
    "question based on the given passages. Only give me the answer and do not output any "
    "other words.\n\nQuestion: {input}\nAnswer:"
)

# name: (metric, max_new_tokens, prompt), in LongBench's order.
_TABLE: dict[str, tuple[str, int, str]] = {
    "narrativeqa": (
        "qa_f1",
        128,
        (
            "You are given a story, which can be either a novel or a movie script, and a question. "
            "Answer the question asconcisely as you can, using a single phrase if possible. Do not "
            "provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story "
            "asconcisely as you can, using a single phrase if possible. Do not provide any "
            "explanation.\n\nQuestion: {input}\n\nAnswer:"
        ),
    ),
    "qasper": (
        "qa_f1",
        128,
        (
            "You are given a scientific article and a question. Answer the question as concisely as "
            "you can, using a single phrase or sentence if possible. If the question cannot be "
            "answered based on the information in the article, write \"unanswerable\". If the question "
            "is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any "
            "explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as "
            "concisely as you can, using a single phrase or sentence if possible. If the question "
            "cannot be answered based on the information in the article, write \"unanswerable\". If the "
            "question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any "
            "explanation.\n\nQuestion: {input}\n\nAnswer:"
        ),
    ),
    "multifieldqa_en": (
        "qa_f1",
        64,
        (
            "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following "
            "question based on the above text, only give me the answer and do not output any other "
            "words.\n\nQuestion: {input}\nAnswer:"
        ),
    ),
    "multifieldqa_zh": (
        "qa_f1_zh",
        64,
        (
            "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，不要输出任何其他字词。\n\n问题：{input}\n回答："
        ),
    ),
    "hotpotqa": ("qa_f1", 32, _MULTI_PASSAGE_QA),
    "2wikimqa": ("qa_f1", 32, _MULTI_PASSAGE_QA),
    "musique": ("qa_f1", 32, _MULTI_PASSAGE_QA),
    "dureader": (
        "rouge_zh",
        128,
        (
            "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答："
        ),
    ),
    "gov_report": (
        "rouge",
        512,
        (
            "You are given a report by a government agency. Write a one-page summary of the "
            "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"
        ),
    ),
    "qmsum": (
        "rouge",
        512,
        (
            "You are given a meeting transcript and a query containing a question or instruction. "
            "Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query "
            "based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:"
        ),
    ),
    "multi_news": (
        "rouge",
        512,
        (
            "You are given several news passages. Write a one-page summary of all news. "
            "\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:"
        ),
    ),
    "vcsum": (
        "rouge_zh",
        512,
        (
            "下面有一段会议记录，请你阅读后，写一段总结，总结会议的内容。\n会议记录：\n{context}\n\n会议总结："
        ),
    ),
    "trec": (
        "classification",
        64,
        (
            "Please determine the type of the question below. Here are some examples of "
            "questions.\n\n{context}\n{input}"
        ),
    ),
    "triviaqa": (
        "qa_f1",
        32,
        (
            "Answer the question based on the given passage. Only give me the answer and do not "
            "output any other words. The following are some examples.\n\n{context}\n\n{input}"
        ),
    ),
    "samsum": (
        "rouge",
        128,
        (
            "Summarize the dialogue into a few short sentences. The following are some "
            "examples.\n\n{context}\n\n{input}"
        ),
    ),
    "lsht": (
        "classification",
        64,
        (
            "请判断给定新闻的类别，下面是一些例子。\n\n{context}\n{input}"
        ),
    ),
    "passage_count": (
        "count",
        32,
        (
            "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. "
            "Please carefully read these paragraphs and determine how many unique paragraphs there "
            "are after removing duplicates. In other words, how many non-repeating paragraphs are "
            "there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after "
            "removing duplicates. The output format should only contain the number, such as 1, 2, 3, "
            "and so on.\n\nThe final answer is: "
        ),
    ),
    "passage_retrieval_en": (
        "retrieval",
        32,
        (
            "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which "
            "paragraph the abstract is from.\n\n{context}\n\nThe following is an "
            "abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. "
            "The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: "
        ),
    ),
    "passage_retrieval_zh": (
        "retrieval_zh",
        32,
        (
            "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n{input}\n\n请输入摘要所属段落的编号。答案格式必须是\"段落1\"，\"段落2\"等格式\n\n答案是："
        ),
    ),
    "lcc": (
        "code_sim",
        64,
        (
            "Please complete the code given below. \n{context}Next line of code:\n"
        ),
    ),
    "repobench-p": (
        "code_sim",
        64,
        (
            "Please complete the code given below. \n{context}{input}Next line of code:\n"
        ),
    ),
}

DATASETS: dict[str, LongBenchDataset] = {name: LongBenchDataset(name, *row) for name, row in _TABLE.items()}
