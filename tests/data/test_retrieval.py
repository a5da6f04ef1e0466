"""Retrieval documents mixed into training windows: seeded, the right share, answerable, train split only."""

import re

import numpy as np
import pytest
import torch

from clexlab.data.packing import PackedWindows
from clexlab.data.retrieval import RetrievalMix, RetrievalWindows, describe
from clexlab.data.tokenizer import ByteTokenizer
from clexlab.utils.errors import UserError

TEXT = ("def f(x):\n    return x + 1  # natural code as filler\n" * 400).encode()


def windows(seq_len=512, fraction=0.5, seed=0, kinds=("passkey", "niah", "kv", "copy")):
    stream = np.frombuffer(TEXT, dtype=np.uint8).astype(np.uint16)
    return RetrievalWindows(PackedWindows(stream, seq_len), ByteTokenizer(), RetrievalMix(fraction, kinds), seed)


def test_bad_options_are_one_line():
    with pytest.raises(UserError, match=r"data.retrieval.fraction must be in \[0, 1\], got 1.5"):
        RetrievalMix(1.5)
    with pytest.raises(UserError, match="data.retrieval.kinds must be a non-empty subset"):
        RetrievalMix(0.5, ["essay"])


def test_seeded_share_and_shapes():
    a, b, other = windows(seed=1), windows(seed=1), windows(seed=2)
    picked = [i for i in range(len(a)) if a.is_retrieval(i)]
    assert 0.35 < len(picked) / len(a) < 0.65  # 0.5 of the windows, drawn per index
    assert [i for i in range(len(a)) if other.is_retrieval(i)] != picked
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["input_ids"], y["input_ids"]) and x["input_ids"].shape == (512,)
        assert torch.equal(x["labels"][:-1], x["input_ids"][1:])  # still a next-token window
        if not a.is_retrieval(i):
            assert torch.equal(x["input_ids"], a.windows[i]["input_ids"])  # natural windows untouched
    assert windows(fraction=0.0).__class__ is RetrievalWindows and not any(windows(fraction=0.0).is_retrieval(i) for i in range(10))
    assert RetrievalMix(0.0).wrap(a.windows, ByteTokenizer(), 0) is a.windows


@pytest.mark.parametrize("kind", ["passkey", "niah", "kv", "copy", "numbers"])
def test_documents_end_the_window_and_can_be_answered(kind):
    w = windows(kinds=(kind,), fraction=1.0)
    for i in range(12):
        text = describe(w, i)
        ids = torch.cat([w[i]["input_ids"], w[i]["labels"][-1:]]).tolist()
        assert len(ids) == 513 and 256 in ids  # the end-of-document token separates natural text and the document
        doc = ByteTokenizer().decode(ids[len(ids) - 1 - ids[::-1].index(256) + 1 :])
        assert text.endswith(doc)
        if kind == "passkey":
            key = re.search(r"The pass key is (\d{5})\. Remember it\.", doc).group(1)
            assert doc.endswith(f"What is the pass key? The pass key is {key}.")
        elif kind == "niah":
            answer = doc.rsplit(" mentioned in the provided text ", 1)[1].split(" ", 1)[1].rstrip(".")
            for value in answer.split(", "):
                assert f"is: {value}." in doc
        elif kind == "copy":
            lines = doc.splitlines()[1:]
            assert doc.startswith("Copy each line.\n") and len(lines) >= 2
            runs = [len(list(group)) for _, group in __import__("itertools").groupby(lines)]
            assert all(2 <= k <= 4 for k in runs[:-1])  # every string written 2-4 times (the last may be cut by the fit)
        elif kind == "numbers":
            lines = doc.splitlines()  # each list, then the same list again
            assert lines and all(re.fullmatch(r"Numbers: (\d{7}(?: \d{7}){0,3})\. Again: \1\.", line) for line in lines)
        else:
            pairs = dict(re.findall(r"^(\S+(?: \S+)?): (\d+)$", doc, flags=re.MULTILINE))
            lookups = re.findall(r"^(\S+(?: \S+)?)\? (\d+)$", doc, flags=re.MULTILINE)
            assert lookups and all(pairs[k] == v for k, v in lookups)


def test_only_the_train_windows_are_mixed(tmp_path):
    from clexlab.data.corpus import StdlibCorpus
    from clexlab.data.datamodule import LongContextDataModule

    root = tmp_path / "src"
    root.mkdir()
    for k in range(40):
        (root / f"m{k}.py").write_text(TEXT.decode()[: 3000 + 37 * k])
    dm = LongContextDataModule(StdlibCorpus(str(root), 0.2, 0.2), ByteTokenizer(), 256, 4, tmp_path / "cache",
                               retrieval=RetrievalMix(0.5))
    train = dm.train_dataloader().dataset
    assert isinstance(train, RetrievalWindows) and any(train.is_retrieval(i) for i in range(len(train)))
    assert isinstance(dm.val_dataloader().dataset, PackedWindows)
