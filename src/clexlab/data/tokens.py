"""Tokenize a corpus split once into a flat token stream, cached on disk.

Documents are joined with the tokenizer's end-of-document token. The cache key
covers the corpus fingerprint and the tokenizer, so a changed file or
tokenizer never serves stale tokens; a second run memory-maps the file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from clexlab.data.corpus import Corpus
from clexlab.data.tokenizer import Tokenizer
from clexlab.utils.errors import UserError


def _cache_path(cache_dir: Path, corpus: Corpus, tokenizer: Tokenizer, split: str) -> Path:
    key = hashlib.sha1(f"{corpus.name}:{corpus.fingerprint()}:{tokenizer.name}:{split}".encode()).hexdigest()[:20]
    return cache_dir / f"{corpus.name}-{split}-{key}.npy"


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max else np.dtype(np.int32)


def tokenize_split(corpus: Corpus, tokenizer: Tokenizer, split: str, cache_dir: str | Path) -> np.ndarray:
    """The token stream of ``split`` (read-only memory map when cached).

    Raises:
        UserError: if the split holds no text.
    """
    cache_dir = Path(cache_dir)
    path = _cache_path(cache_dir, corpus, tokenizer, split)
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError):  # EOFError: an empty file
            path.unlink(missing_ok=True)  # a damaged cache is rebuilt, not trusted
    dtype = _dtype_for(tokenizer.vocab_size)
    pieces: list[np.ndarray] = []
    eos = np.array([tokenizer.eos_token_id], dtype=dtype)
    documents = 0
    for text in corpus.documents(split):
        documents += 1
        if not text:
            continue
        pieces.append(np.asarray(tokenizer.encode(text), dtype=dtype))
        pieces.append(eos)
    if not pieces:
        what = f"its {documents} documents are all empty" if documents else "it has no documents"
        raise UserError(
            f"the {split} split of corpus {corpus.name!r} is empty ({what}): add files or change the split fractions"
        )
    tokens = np.concatenate(pieces)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write, then link into place: a run killed mid-write never leaves a truncated cache behind,
    # and a cache file another run wrote meanwhile (the same tokens: the name is their hash) is kept.
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; a cache directory may be shared
        with os.fdopen(fd, "wb") as f:
            np.save(f, tokens)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: rename (atomic, may replace an identical file)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return tokens
