"""Corpora, tokenizers, packing and the LightningDataModule."""

from clexlab.data.corpus import Corpus, StdlibCorpus, TextCorpus, split_of
from clexlab.data.packing import PackedWindows
from clexlab.data.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from clexlab.data.tokens import tokenize_split

__all__ = [
    "ByteTokenizer",
    "Corpus",
    "HFTokenizer",
    "PackedWindows",
    "StdlibCorpus",
    "TextCorpus",
    "load_tokenizer",
    "split_of",
    "tokenize_split",
]
