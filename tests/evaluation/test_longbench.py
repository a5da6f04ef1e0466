"""LongBench: every metric against values worked out by hand, files written here, truncation, one-line errors."""

import json

import pytest
import torch
from torch import nn

from clexlab.data.tokenizer import ByteTokenizer
from clexlab.evaluation.longbench import (
    DATASETS,
    FIELDS,
    load_longbench,
    longbench_eval,
    prompt_ids,
    score_dataset,
    score_record,
    truncate_middle,
)
from clexlab.evaluation.longbench import metrics as m
from clexlab.utils.errors import UserError


def record(**fields):
    base = {"input": "q", "context": "c", "answers": ["a"], "length": 10, "dataset": "x", "language": "en",
            "all_classes": None, "_id": "0"}
    return {**base, **fields}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_english_qa_f1_by_hand():
    # "the eiffel tower in paris" -> articles out -> [eiffel, tower, in, paris] vs [eiffel, tower]: P 1/2, R 1, F1 2/3
    assert m.qa_f1("The Eiffel Tower, in Paris!", "Eiffel Tower") == pytest.approx(2 / 3)
    assert m.qa_f1("", "Eiffel Tower") == 0.0
    assert m.normalize_answer("An  apple, the PEAR.") == "apple pear"
    # repeated words count with multiplicity: [a1, a1, b] vs [a1, b, c]: 2 shared, P 2/3, R 2/3
    assert m.qa_f1("a1 a1 b", "a1 b c") == pytest.approx(2 / 3)


def test_chinese_metrics_by_hand():
    import jieba

    assert list(jieba.cut("我爱北京", cut_all=False)) == ["我", "爱", "北京"]
    # jieba words, punctuation dropped: [北京] vs [北京] (the full stop normalises to nothing)
    assert m.qa_f1_zh("北京", "北京。") == pytest.approx(1.0)
    # [我, 爱, 北京] vs [我, 爱, 上海]: 2 of 3 shared each way
    assert m.qa_f1_zh("我爱北京", "我爱上海") == pytest.approx(2 / 3)
    assert m.rouge_zh("我爱北京", "我爱上海") == pytest.approx(2 / 3, abs=1e-6)


def test_rouge_l_by_hand():
    # LCS of "a b c" and "a b d" is "a b": recall 2/3, precision 2/3, F 2/3
    assert m.rouge("a b c", "a b d") == pytest.approx(2 / 3, abs=1e-6)
    assert m.rouge("", "a b d") == 0.0  # the package refuses an empty prediction: LongBench scores it 0


def test_classification_by_hand_including_longbench_walk():
    classes = ["cat", "category", "dog"]
    # matched [cat, category, dog]; "cat" is part of the reference "category": dropped -> [category, dog] -> 1/2
    assert m.classification("category or dog", "category", all_classes=classes) == pytest.approx(0.5)
    assert m.classification("dog", "category", all_classes=classes) == 0.0
    assert m.classification("a category", "category", all_classes=classes) == pytest.approx(1.0)
    # LongBench drops while iterating: "a" goes, so "b" (next) is never looked at and stays -> [b, ab] -> 1/2
    assert m.classification("ab", "ab", all_classes=["a", "b", "ab"]) == pytest.approx(0.5)


def test_retrieval_count_and_code_by_hand():
    assert m.retrieval("Paragraph 3, not Paragraph 12", "Paragraph 3") == pytest.approx(0.5)
    assert m.retrieval("none", "Paragraph 3") == 0.0
    assert m.retrieval_zh("答案是段落5", "段落5") == pytest.approx(1.0)
    assert m.count("There are 7 unique paragraphs out of 10", 7) == pytest.approx(0.5)
    # the first line without ``` / # / //: "x = foo(1)" vs "x = foo(2)": 9 of 10 characters match -> ratio 90
    assert m.code_sim("```python\n# comment\nx = foo(1)\n", "x = foo(2)") == pytest.approx(0.9)
    assert m.code_sim("# only a comment", "x = 1") == 0.0


def test_record_and_dataset_scores():
    # best over references; trec scores only the first line
    assert score_record("qa_f1", "Paris", ["London", "Paris"]) == 1.0
    assert score_record("classification", "DESC\nENTY", ["ENTY"], ["DESC", "ENTY"], first_line=True) == 0.0
    assert score_record("classification", "DESC\nENTY", ["ENTY"], ["DESC", "ENTY"], first_line=False) == pytest.approx(0.5)
    records = [record(answers=["Paris"], length=3000), record(answers=["Rome"], length=9000)]
    scored = score_dataset(DATASETS["hotpotqa"], records, ["Paris", "Milan"], extended=True)
    assert scored.score == 50.0 and scored.n == 2 and scored.buckets == {"0-4k": 100.0, "8k+": 0.0}


def test_prompt_template_truncation_and_chat_rule():
    tok = ByteTokenizer()
    rec = record(context="A" * 500 + "B" * 500, input="which letter?")
    full = DATASETS["hotpotqa"].prompt.format(context=rec["context"], input=rec["input"])
    ids = prompt_ids(DATASETS["hotpotqa"], rec, tok, 200, chat_template=False, prefix_ids=[7])
    text = tok.decode(ids[1:])
    assert ids[0] == 7 and len(ids) == 201
    assert text == full[:100] + full[-100:]  # first and last half kept, the middle cut
    assert truncate_middle(tok, "short", 200) == "short"
    assert not DATASETS["trec"].chat and DATASETS["hotpotqa"].chat and DATASETS["lcc"].max_new_tokens == 64
    with pytest.raises(UserError, match="eval.longbench.chat_template=true needs a tokenizer with a chat template"):
        prompt_ids(DATASETS["hotpotqa"], rec, tok, 200, chat_template=True)
    # a dataset LongBench leaves plain never asks for the chat template
    assert prompt_ids(DATASETS["trec"], rec, tok, 200, chat_template=True)


def test_reading_files_and_their_errors(tmp_path):
    with pytest.raises(UserError, match="is not a directory: put LongBench's <dataset>.jsonl files"):
        load_longbench(tmp_path / "missing")
    with pytest.raises(UserError, match="has no LongBench file"):
        load_longbench(tmp_path)
    write_jsonl(tmp_path / "trec.jsonl", [record(), record(_id="1")])
    write_jsonl(tmp_path / "hotpotqa_e.jsonl", [record()])
    (tmp_path / "notes.jsonl").write_text("{}\n")
    files = load_longbench(tmp_path)
    assert [(f.dataset, f.extended, len(f.records)) for f in files] == [("hotpotqa", True, 1), ("trec", False, 2)]
    assert len(load_longbench(tmp_path, ["trec"], limit=1)[0].records) == 1
    with pytest.raises(UserError, match=r"has no file for \['qasper'\]"):
        load_longbench(tmp_path, ["qasper"])
    bad = record()
    del bad["answers"], bad["_id"]
    write_jsonl(tmp_path / "lcc.jsonl", [record(), bad])
    with pytest.raises(UserError) as err:
        load_longbench(tmp_path, ["lcc"])
    assert str(err.value) == f"{tmp_path / 'lcc.jsonl'}:2: missing field(s) ['answers', '_id']; a LongBench record has {list(FIELDS)}"
    (tmp_path / "lcc.jsonl").write_text('{"input": \n')
    with pytest.raises(UserError, match=r"lcc.jsonl:1: not a JSON line"):
        load_longbench(tmp_path, ["lcc"])


class Scripted(nn.Module):
    """A stand-in model whose ``generate`` appends a fixed answer (one per call, in order)."""

    def __init__(self, tokenizer, answers):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.tokenizer, self.answers, self.prompts = tokenizer, list(answers), []

    def generate(self, input_ids, max_new_tokens, eos_token_id=None, **kwargs):
        self.prompts.append(input_ids[0].tolist())
        new = self.tokenizer.encode(self.answers.pop(0))[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new], dtype=input_ids.dtype)], dim=1)


def test_end_to_end_scores_on_files_written_here(tmp_path):
    tok = ByteTokenizer()
    write_jsonl(tmp_path / "passage_count.jsonl", [record(answers=["3"], context="p " * 400), record(answers=["4"])])
    write_jsonl(tmp_path / "trec.jsonl", [record(answers=["LOC"], all_classes=["LOC", "HUM"])])
    files = load_longbench(tmp_path)
    model = Scripted(tok, ["3 and 5", "4", "LOC\nHUM"])
    payload = longbench_eval(model, tok, files, budget=1000)
    assert payload["datasets"]["passage_count"]["score"] == 75.0  # (1/2 + 1) / 2
    assert payload["datasets"]["trec"]["score"] == 100.0  # first line only
    assert payload["average"] == 87.5 and payload["max_length"] == 1000
    assert len(model.prompts[0]) == 1000 and len(model.prompts[1]) < 1000  # the long context was cut to the budget
