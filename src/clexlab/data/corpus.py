"""Corpora: where the documents come from and which split each belongs to.

The default corpus is the Python standard library of the running interpreter:
real text present on every machine, no download. Splits are decided per
document by a hash of its name, so they are deterministic, disjoint, and stable
when files are added or removed elsewhere.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

from clexlab.utils.errors import UserError, dataset_errors, describe

SPLITS = ("train", "val", "test")


def split_of(key: str, val_fraction: float, test_fraction: float) -> str:
    """The split of the document named ``key``: a uniform hash compared with the fractions."""
    u = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def _stat_fingerprint(paths: Sequence[Path], extra: str) -> str:
    h = hashlib.sha1(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


class Corpus:
    """A set of documents split three ways. Subclasses provide ``_iter_split``."""

    name = "corpus"

    def fingerprint(self) -> str:
        """A short hash that changes whenever the documents or the split change."""
        raise NotImplementedError

    def documents(self, split: str) -> Iterator[str]:
        """Texts of the documents of ``split`` in a fixed order."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; use one of {SPLITS}")
        yield from self._iter_split(split)

    def _iter_split(self, split: str) -> Iterator[str]:
        raise NotImplementedError


class StdlibCorpus(Corpus):
    """The ``.py`` files of the interpreter's standard library (``site-packages`` excluded).

    Args:
        root: directory to read (default: this interpreter's stdlib).
        val_fraction: share of files in the validation split.
        test_fraction: share of files in the test split.
    """

    name = "stdlib"

    def __init__(self, root: str | None = None, val_fraction: float = 0.05, test_fraction: float = 0.05) -> None:
        self.root = Path(root or sysconfig.get_paths()["stdlib"]).resolve()
        if not self.root.is_dir():
            raise UserError(f"data.root {self.root} is not a directory")
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        files = sorted(Path(p) for p in glob.glob(str(self.root / "**" / "*.py"), recursive=True))
        self.files = [p for p in files if "site-packages" not in p.parts and "dist-packages" not in p.parts]
        if not self.files:
            raise UserError(f"no .py files under {self.root}")

    def fingerprint(self) -> str:
        return _stat_fingerprint(self.files, f"stdlib:{self.val_fraction}:{self.test_fraction}")

    def _iter_split(self, split: str) -> Iterator[str]:
        for path in self.files:
            key = path.relative_to(self.root).as_posix()
            if split_of(key, self.val_fraction, self.test_fraction) == split:
                yield path.read_text(encoding="utf-8", errors="replace")


def _expand(patterns: Sequence[str], what: str) -> list[Path]:
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(os.path.expanduser(str(pattern)), recursive=True))
        if not matched:
            raise UserError(f"{what}: no file matches {pattern!r}; check the path")
        paths.extend(Path(m).resolve() for m in matched if Path(m).is_file())
    return paths


def read_text_document(path: Path) -> str:
    """One plain-text document, decoded as strict UTF-8 (universal newlines, like ``open``).

    A binary file (an archive, a model shard matched by a loose glob) would
    otherwise become millions of replacement characters in the training data,
    silently; here it is one line naming the file.

    Raises:
        UserError: the file is binary or not UTF-8.
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {path} ({describe(err)}): check its permissions or leave it out of data.corpus.*_files") from err
    if b"\x00" in raw[:8192]:
        raise UserError(f"{path} looks binary (NUL bytes), not text: leave it out of data.corpus.*_files")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}): "
            "convert it (e.g. iconv -t utf-8) or leave it out of data.corpus.*_files"
        ) from err
    return text.replace("\r\n", "\n").replace("\r", "\n")


class TextCorpus(Corpus):
    """The user's own local ``.txt`` / ``.jsonl`` / ``.json`` files (JSON read through ``datasets``).

    Plain text files are one document each; JSON lines give one document per
    record (field ``text_field``). When no validation/test files are given,
    documents of ``train_files`` are assigned to splits by hash.

    Args:
        train_files: paths or glob patterns.
        val_files: optional explicit validation files.
        test_files: optional explicit test files.
        text_field: JSON field holding the text.
        val_fraction: share for validation when ``val_files`` is empty.
        test_fraction: share for test when ``test_files`` is empty.
    """

    name = "text"

    def __init__(
        self,
        train_files: Sequence[str],
        val_files: Sequence[str] = (),
        test_files: Sequence[str] = (),
        text_field: str = "text",
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
    ) -> None:
        if not train_files:
            raise UserError("data=text needs files: set data.corpus.train_files=[/path/to/*.txt]")
        self.files = {
            "train": _expand(train_files, "data.corpus.train_files"),
            "val": _expand(val_files, "data.corpus.val_files"),
            "test": _expand(test_files, "data.corpus.test_files"),
        }
        self.text_field = text_field
        self.val_fraction = 0.0 if val_files else val_fraction
        self.test_fraction = 0.0 if test_files else test_fraction

    def fingerprint(self) -> str:
        every = [p for split in SPLITS for p in self.files[split]]
        extra = f"text:{self.text_field}:{self.val_fraction}:{self.test_fraction}:" + ",".join(
            f"{s}={len(self.files[s])}" for s in SPLITS
        )
        return _stat_fingerprint(every, extra)

    def _records(self, path: Path) -> Iterator[str]:
        if path.suffix in (".jsonl", ".json"):
            from datasets import load_dataset

            try:
                ds = load_dataset("json", data_files=str(path), split="train")
            except dataset_errors() as err:  # DatasetGenerationError wraps pyarrow's parse error
                cause = err.__cause__ or err
                raise UserError(
                    f"{path} is not valid JSON lines ({type(cause).__name__}): fix it or leave it out of data.corpus.*_files"
                ) from err
            if self.text_field not in ds.column_names:
                raise UserError(
                    f"{path} has no field {self.text_field!r} (fields: {ds.column_names}); set data.corpus.text_field"
                )
            try:
                for i, value in enumerate(ds[self.text_field]):
                    if not isinstance(value, str):
                        # str() would train on "None" or "{'a': 1}" without a word.
                        raise UserError(
                            f"{path} record {i + 1}: field {self.text_field!r} holds {type(value).__name__} "
                            f"{str(value)[:40]!r}, not text: fix the record or set data.corpus.text_field to the text's field"
                        )
                    yield value
            except UnicodeDecodeError as err:  # pyarrow lets invalid UTF-8 inside a JSON string through
                raise UserError(
                    f"{path} holds text that is not UTF-8 ({describe(err)}): convert it (e.g. iconv -t utf-8) "
                    "or leave it out of data.corpus.*_files"
                ) from err
        else:
            yield read_text_document(path)

    def _iter_split(self, split: str) -> Iterator[str]:
        own = split != "train" and self.files[split]
        sources = self.files[split] if own else self.files["train"]
        for path in sources:
            for i, text in enumerate(self._records(path)):
                if own or split_of(f"{path.name}#{i}", self.val_fraction, self.test_fraction) == split:
                    yield text
