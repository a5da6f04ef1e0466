import json

import numpy as np
import pytest
import torch

from clexlab.data import ByteTokenizer, PackedWindows, StdlibCorpus, TextCorpus, split_of, tokenize_split
from clexlab.utils.errors import UserError


def test_stdlib_split_is_disjoint_by_file_and_deterministic():
    corpus = StdlibCorpus()
    keys = [p.relative_to(corpus.root).as_posix() for p in corpus.files]
    splits = {s: {k for k in keys if split_of(k, 0.05, 0.05) == s} for s in ("train", "val", "test")}
    assert not splits["train"] & splits["val"] and not splits["train"] & splits["test"] and not splits["val"] & splits["test"]
    assert sum(map(len, splits.values())) == len(keys)
    assert len(splits["val"]) > 20 and len(splits["test"]) > 20
    again = {k for k in keys if split_of(k, 0.05, 0.05) == "val"}
    assert again == splits["val"]


def test_split_of_a_file_does_not_depend_on_other_files():
    assert split_of("json/decoder.py", 0.05, 0.05) == split_of("json/decoder.py", 0.05, 0.05)
    assert {split_of(f"f{i}.py", 0.5, 0.0) for i in range(50)} == {"train", "val"}


def test_tokenized_split_is_cached_and_reused(tmp_path):
    corpus = StdlibCorpus()
    first = tokenize_split(corpus, ByteTokenizer(), "val", tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    second = tokenize_split(corpus, ByteTokenizer(), "val", tmp_path)
    assert isinstance(second, np.memmap)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert (np.asarray(second) == ByteTokenizer.eos_token_id).sum() > 20  # one EOS per document


def test_packed_windows_cover_the_stream_once():
    tokens = np.arange(101, dtype=np.uint16)
    windows = PackedWindows(tokens, 10)
    assert len(windows) == 10
    item = windows[3]
    assert torch.equal(item["input_ids"], torch.arange(30, 40))
    assert torch.equal(item["labels"], torch.arange(31, 41))
    targets = torch.cat([windows[i]["labels"] for i in range(len(windows))])
    assert torch.equal(targets, torch.arange(1, 101))


def test_text_corpus_reads_txt_and_jsonl_through_datasets(tmp_path):
    for i in range(30):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"document {i}\nsecond line\n" * 5)
    with open(tmp_path / "more.jsonl", "w") as f:
        for i in range(40):
            f.write(json.dumps({"text": f"record {i}", "id": i}) + "\n")
    corpus = TextCorpus([str(tmp_path / "*.txt"), str(tmp_path / "more.jsonl")], val_fraction=0.2, test_fraction=0.2)
    docs = {s: list(corpus.documents(s)) for s in ("train", "val", "test")}
    assert sum(map(len, docs.values())) == 70
    assert all(docs.values())
    assert "document 0\nsecond line\n" * 5 in sum(docs.values(), [])  # a .txt file is one document
    tokens = tokenize_split(corpus, ByteTokenizer(), "train", tmp_path / "cache")
    assert len(tokens) > 100


def test_text_corpus_missing_files_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no file matches"):
        TextCorpus([str(tmp_path / "nothing*.txt")])
    with pytest.raises(UserError, match="data.corpus.train_files"):
        TextCorpus([])


def test_jsonl_without_the_text_field_is_a_user_error(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    corpus = TextCorpus([str(tmp_path / "a.jsonl")], val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(UserError, match="text_field"):
        list(corpus.documents("train"))


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'é'\n"
    assert tok.decode(tok.encode(text)) == text
    assert max(tok.encode(text)) < 256
