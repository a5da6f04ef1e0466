"""Tokenizers: byte-level for the tiny default, the model's own for checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from clexlab.utils.errors import UserError, describe, is_tokenizer_error
from clexlab.utils.json_files import read_json_object

# The tokenizer files transformers reads as JSON objects; a damaged one is named before transformers reads it.
JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


class Tokenizer(Protocol):
    """What the data pipeline needs of a tokenizer."""

    name: str
    vocab_size: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus an end-of-document token 256.

    No files, no download, works on any text: the tokenizer of the tiny default.
    """

    name = "bytes-v1"
    vocab_size = 257
    eos_token_id = 256
    bos_prefix: list[int] = []

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8", errors="replace"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A transformers tokenizer loaded from a local directory (never from a hub)."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoTokenizer

        path = Path(path)
        check_tokenizer_files(path)
        try:
            self._tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            # [bos] when the tokenizer adds it by default (LLaMA does): prompts built from raw ids need it too.
            bos = self._tok.bos_token_id
            adds_bos = bos is not None and bos in self._tok("", add_special_tokens=True)["input_ids"]
        except Exception as err:
            if not is_tokenizer_error(err):  # only what transformers/tokenizers raise for bad files
                raise
            raise UserError(
                f"cannot load a tokenizer from {path} ({describe(err)}): its tokenizer files (or config.json) are "
                "damaged or incomplete; copy them from the model's release (tokenizer.json, tokenizer_config.json, ...)"
            ) from err
        self.name = f"hf:{path.resolve()}"
        self.vocab_size = len(self._tok)
        eos = self._tok.eos_token_id
        self.eos_token_id = int(eos if eos is not None else 0)
        self.bos_prefix: list[int] = [bos] if adds_bos else []

    def encode(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


def check_tokenizer_files(path: Path) -> None:
    """The tokenizer's JSON files in ``path`` are readable JSON objects, or a one-line error naming the file."""
    for name in JSON_FILES:
        file = path / name
        if file.exists():
            read_json_object(file, "copy the tokenizer files again")


def load_tokenizer(kind: str, path: str | None = None) -> Tokenizer:
    """``kind="bytes"`` for the byte tokenizer, ``"hf"`` for the one in the model directory ``path``."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "hf":
        if not path:
            raise UserError("tokenizer=hf needs a model directory: set model.path=/path/to/model")
        return HFTokenizer(path)
    raise UserError(f"unknown tokenizer {kind!r}: use 'bytes' or 'hf'")
