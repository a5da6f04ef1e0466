"""Broken files a user hands clexlab: every reader ends in one ``UserError`` line or reads the file; nothing else.

A ``hypothesis`` sweep breaks one file of a pristine directory per example
(truncated, bytes overwritten, garbage spliced in, emptied, replaced by a file
of another format, made unreadable) and runs the code that reads it on a
fresh copy. Allowed outcomes: the reader succeeds (some damage is invisible:
a flipped byte inside a weight tensor is still a tensor), or it raises a
:class:`UserError` whose message is one line. Any other exception fails the
test with the smallest damage that causes it.

File kinds covered (11): a Lightning checkpoint as ``ckpt_path`` (the resume
check and eval.py's loader) and as ``init_from``; a Hugging Face directory's
``model.safetensors``, ``pytorch_model.bin``, ``config.json``,
``tokenizer.json`` and ``tokenizer_config.json``; a released-format CLEX
directory's ``config.json`` and ``model.safetensors``; ``.jsonl`` and ``.txt``
corpora. Examples are derandomized (the same ones every run) and bounded:
``EXAMPLES`` per kind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clexlab.utils.errors import UserError
from tests.conftest import TINY_CLEX, TINY_MODEL, TINY_OPTIM

# Examples per file kind; CLEXLAB_TEST_EXAMPLES=200 sweeps deeper (not derandomized then: new examples each run).
EXAMPLES = int(os.environ.get("CLEXLAB_TEST_EXAMPLES", "25"))
DERANDOMIZE = "CLEXLAB_TEST_EXAMPLES" not in os.environ


# ----------------------------------------------------------------------------------- damage
@dataclass(frozen=True)
class Damage:
    """One way to break a file: ``how`` and its parameters (drawn by hypothesis)."""

    how: str  # truncate | overwrite | splice | empty | wrong_format | unreadable
    fraction: float = 0.5
    positions: tuple[int, ...] = ()
    garbage: bytes = b""
    choice: int = 0

    def apply(self, file: Path, wrong_formats: list[bytes]) -> None:
        data = file.read_bytes()
        if self.how == "truncate":
            file.write_bytes(data[: int(len(data) * self.fraction)])
        elif self.how == "overwrite":
            broken = bytearray(data)
            for i, pos in enumerate(self.positions):
                broken[pos % len(broken)] = self.garbage[i % len(self.garbage)] if self.garbage else 0xFF
            file.write_bytes(bytes(broken))
        elif self.how == "splice":
            at = int(len(data) * self.fraction)
            file.write_bytes(data[:at] + self.garbage + data[at + len(self.garbage) :])
        elif self.how == "empty":
            file.write_bytes(b"")
        elif self.how == "wrong_format":
            file.write_bytes(wrong_formats[self.choice % len(wrong_formats)])
        elif self.how == "unreadable":
            if self.choice % 2:
                file.unlink()
                file.mkdir()  # a directory where the file should be
            else:
                file.chmod(0)  # (root reads it anyway: then the read succeeds)


fractions = st.floats(min_value=0.0, max_value=0.999)
damages = st.one_of(
    st.builds(Damage, how=st.just("truncate"), fraction=fractions),
    st.builds(
        Damage,
        how=st.just("overwrite"),
        positions=st.lists(st.integers(0, 2**20), min_size=1, max_size=8).map(tuple),
        garbage=st.binary(min_size=1, max_size=8),
    ),
    st.builds(Damage, how=st.just("splice"), fraction=fractions, garbage=st.binary(min_size=1, max_size=64)),
    st.builds(Damage, how=st.just("empty")),
    st.builds(Damage, how=st.just("wrong_format"), choice=st.integers(0, 20)),
    st.builds(Damage, how=st.just("unreadable"), choice=st.integers(0, 1)),
)


# ----------------------------------------------------------------------------------- pristine files
def torch_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)
COMMON_WRONG = [PNG, b"hello world\n", bytes(range(256)) * 4, "caf\xe9".encode("latin-1") * 20]


class Pristine(dict):
    """The pristine files (a dict), shown briefly when hypothesis reports a failing example."""

    def __repr__(self) -> str:
        return f"Pristine({self['root']})"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    """One directory per reader, built once: a checkpoint, HF directories (safetensors / bin), a released CLEX one, corpora."""
    from clexlab.models import LongContextLM
    from clexlab.models.official_clex import export_official_clex
    from tests.workflows.test_local_checkpoint import save_tiny_hf_model

    root = tmp_path_factory.mktemp("pristine")
    torch.manual_seed(0)
    module = LongContextLM(model=dict(TINY_MODEL), rope="clex", clex=dict(TINY_CLEX), optim=dict(TINY_OPTIM), vocab_size=257)
    (root / "ckpt").mkdir()
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "optimizer_states": [], "loops": {},
         "global_step": 3},
        root / "ckpt" / "last.ckpt",
    )
    save_tiny_hf_model(root / "hf")
    shutil.copytree(root / "hf", root / "hf_bin")
    from safetensors.torch import load_file

    state = load_file(str(root / "hf_bin" / "model.safetensors"))
    (root / "hf_bin" / "model.safetensors").unlink()
    torch.save(state, root / "hf_bin" / "pytorch_model.bin")
    export_official_clex(module.model, root / "release", byte_tokenizer=True)
    (root / "corpus").mkdir()
    records = [{"text": f"document {i}: " + "alpha beta gamma " * (i + 1)} for i in range(6)]
    (root / "corpus" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "corpus" / "data.txt").write_text("A plain text document.\nWith two lines.\n" * 5)
    return Pristine(root=root, module=module)


# ----------------------------------------------------------------------------------- readers
def read_resume(path: Path) -> None:
    """``ckpt_path=...``: the preflight resume check, then eval.py's (and export's) loader."""
    from clexlab.utils.checkpoint_io import load_checkpoint_file
    from clexlab.utils.resume import check_resume_compatible
    from clexlab.workflows.evaluate import load_checkpoint

    each(
        lambda: check_resume_compatible(load_checkpoint_file(path, mmap=True), dict(TINY_MODEL), "clex", path),
        lambda: load_checkpoint(str(path)),
    )


def read_init_from(module) -> Callable[[Path], None]:
    def read(path: Path) -> None:
        from clexlab.models.init_from import load_weights_from
        from clexlab.utils.checks import check_init_from

        each(lambda: check_init_from(str(path)), lambda: load_weights_from(module, path))

    return read


def read_hf(directory: Path) -> None:
    """``model.path=...``: the preflight check of the directory, then loading weights and tokenizer."""
    from clexlab.data.tokenizer import HFTokenizer
    from clexlab.models.builder import load_pretrained
    from clexlab.utils.checks import check_model_dir

    each(
        lambda: check_model_dir(str(directory)),
        lambda: load_pretrained({"name": "hf", "path": str(directory), "dtype": "float32"}),
        lambda: HFTokenizer(directory),
    )


def read_release(directory: Path) -> None:
    from clexlab.models.official_clex import load_official_clex

    load_official_clex(directory)


def read_corpus(file: Path) -> None:
    from clexlab.data.corpus import TextCorpus

    list(TextCorpus([str(file)]).documents("train"))


def each(*readers: Callable[[], object]) -> None:
    """Run every reader (one may refuse while the next reads more); each must succeed or raise a one-line UserError."""
    for read in readers:
        try:
            read()
        except UserError as err:
            check_one_line(err)


def check_one_line(err: UserError) -> None:
    message = str(err)
    assert message and "\n" not in message, repr(message)


@dataclass(frozen=True)
class Kind:
    """A file a user hands clexlab: where it sits, what reads it, what a file of the wrong format could be."""

    name: str
    directory: str  # under the pristine root
    file: str  # the file that gets broken
    reader: str  # "resume" | "init_from" | "hf" | "release" | "corpus"
    wrong: tuple[bytes, ...]


def _wrong_ckpt() -> tuple[bytes, ...]:
    return (
        torch_bytes([1, 2, 3]),
        torch_bytes({"state_dict": "weights"}),
        torch_bytes({"hyper_parameters": {"model": 5}, "state_dict": {}, "optimizer_states": [], "loops": {}}),
        torch_bytes({"hyper_parameters": {"model": {"hidden_size": 64}, "bogus": 1}, "state_dict": {}}),
        safetensors_bytes({"w": torch.zeros(2)}),
        b'{"state_dict": {}}',
        *COMMON_WRONG,
    )


def _wrong_weights() -> tuple[bytes, ...]:
    return (
        safetensors_bytes({"foo": torch.zeros(3)}),
        safetensors_bytes({"model.embed_tokens.weight": torch.zeros(3, 3)}),
        torch_bytes({"model.embed_tokens.weight": torch.zeros(3, 3)}),
        torch_bytes([1, 2]),
        b'{"weights": []}',
        *COMMON_WRONG,
    )


def _wrong_json() -> tuple[bytes, ...]:
    return (
        b"[1, 2, 3]",
        b'"a string"',
        b'{"model_type": "llama", "hidden_size": "big"}',
        b'{"model_type": "nonexistent_family"}',
        b'{"model_type": "llama", "num_attention_heads": 0}',
        b'{"model_type": "llama", "rope_parameters": {"rope_type": "yarn"}}',
        b'{"rope_scaling": {"type": "clex"}, "model_type": "llama"}',
        b'{"added_tokens": [], "model": 5}',
        *COMMON_WRONG,
    )


def _wrong_jsonl() -> tuple[bytes, ...]:
    return (b'{"text": null}\n', b'{"text": {"a": 1}}\n', b'{"other": "x"}\n', b"[1, 2, 3]\n", b"\n\n \n", *COMMON_WRONG)


KINDS = [
    Kind("ckpt_path", "ckpt", "last.ckpt", "resume", _wrong_ckpt()),
    Kind("init_from", "ckpt", "last.ckpt", "init_from", _wrong_ckpt()),
    Kind("model.safetensors", "hf", "model.safetensors", "hf", _wrong_weights()),
    Kind("pytorch_model.bin", "hf_bin", "pytorch_model.bin", "hf", _wrong_weights()),
    Kind("config.json", "hf", "config.json", "hf", _wrong_json()),
    Kind("tokenizer.json", "hf", "tokenizer.json", "hf", _wrong_json()),
    Kind("tokenizer_config.json", "hf", "tokenizer_config.json", "hf", _wrong_json()),
    Kind("release config.json", "release", "config.json", "release", _wrong_json()),
    Kind("release model.safetensors", "release", "model.safetensors", "release", _wrong_weights()),
    Kind("corpus .jsonl", "corpus", "data.jsonl", "corpus", _wrong_jsonl()),
    Kind("corpus .txt", "corpus", "data.txt", "corpus", COMMON_WRONG),
]


BY_NAME = {k.name: k for k in KINDS}


@pytest.mark.parametrize("name", list(BY_NAME))
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(damage=damages)
def test_a_broken_file_is_read_or_refused_in_one_line(pristine, name: str, damage: Damage) -> None:
    kind = BY_NAME[name]
    readers = {
        "resume": read_resume,
        "init_from": read_init_from(pristine["module"]),
        "hf": read_hf,
        "release": read_release,
        "corpus": read_corpus,
    }
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / kind.directory
        shutil.copytree(pristine["root"] / kind.directory, directory)
        target = directory / kind.file
        damage.apply(target, list(kind.wrong))
        try:
            if kind.reader in ("resume", "init_from", "corpus"):
                each(lambda: readers[kind.reader](target))
            else:
                each(lambda: readers[kind.reader](directory))
        finally:
            if target.exists():
                os.chmod(target, 0o755)  # let the temporary directory be removed
