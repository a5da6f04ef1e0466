"""User-facing errors: one clear line, a non-zero exit, no traceback by default.

The libraries that read a user's files raise their own exceptions for a bad
file, none of them one line naming the file and the fix. The tuples below list
what each raises on a damaged, truncated, empty or foreign file (found by
feeding them such files, see ``tests/reliability/test_broken_files.py``); the
code that reads a user's file catches exactly those around the library call
and raises a :class:`UserError` that names the file and says what to do.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix: a wrong value, a missing path. The message says how.

    The message is kept to one line (line breaks, e.g. from a library's own
    message quoted in it, become spaces): the entry points print only one.
    """

    prefix = "error: "
    exit_code = EXIT_USER_ERROR

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(part.strip() for part in str(message).splitlines() if part.strip()))


def describe(err: BaseException, limit: int = 200) -> str:
    """A library's exception in one line: ``TypeName: its message`` (line breaks removed, at most ``limit`` characters)."""
    # All lines, joined: some libraries put the news on the second line (huggingface_hub's validators).
    text = " ".join(str(err).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@functools.cache
def torch_load_errors() -> tuple[type[BaseException], ...]:
    """What ``torch.load(weights_only=True)`` raises on a damaged, truncated or foreign file.

    Random corruption of a small checkpoint produced every one of these
    (mostly RuntimeError from the zip reader; UnpicklingError, UnicodeDecodeError,
    EOFError, KeyError, IndexError, AssertionError, AttributeError and TypeError
    from the unpickler rebuilding damaged records).
    """
    return (
        pickle.UnpicklingError, RuntimeError, ValueError, EOFError, KeyError, IndexError, AssertionError,
        AttributeError, TypeError, OSError,
    )


@functools.cache
def weights_errors() -> tuple[type[BaseException], ...]:
    """What reading HF weights raises on a bad file: torch.load's, safetensors' and transformers' size mismatch."""
    from safetensors import SafetensorError

    # transformers raises RuntimeError when a tensor's shape does not fit config.json, OSError without weights,
    # TypeError (in torch_load_errors) for a .bin that holds no dict of tensors.
    return (*torch_load_errors(), SafetensorError)


@functools.cache
def hf_config_errors() -> tuple[type[BaseException], ...]:
    """What transformers raises on a config it refuses (its validators, unknown types, missing rope keys).

    ZeroDivisionError: a config class divides by ``num_attention_heads`` before validating it.
    """
    from huggingface_hub.errors import StrictDataclassError

    return (StrictDataclassError, ValueError, KeyError, TypeError, OSError, ZeroDivisionError)


def is_tokenizer_error(err: BaseException) -> bool:
    """True for what ``AutoTokenizer.from_pretrained`` raises on a directory whose tokenizer files are bad.

    The ``tokenizers`` library reports a ``tokenizer.json`` it cannot parse as a
    bare ``Exception`` (never a subclass), so that exact type is matched; a
    structurally wrong JSON file reaches transformers' own code as KeyError,
    TypeError or AttributeError.
    """
    if type(err) is Exception or isinstance(err, (OSError, ValueError, KeyError, TypeError, AttributeError)):
        return True
    # AutoTokenizer reads config.json too, and transformers' validators may refuse it.
    return isinstance(err, hf_config_errors())


@functools.cache
def dataset_errors() -> tuple[type[BaseException], ...]:
    """What ``datasets.load_dataset("json", ...)`` raises on a file that is not JSON lines.

    ``DatasetGenerationError`` wraps pyarrow's parse errors; an empty file
    ends in StopIteration, one of blank lines in ValueError ("corresponds to no data").
    """
    from datasets.exceptions import DatasetsError

    return (DatasetsError, ValueError, OSError, StopIteration)


class StopRequested(UserError):
    """Training stopped on request (Ctrl-C, SIGTERM) after saving a resumable checkpoint.

    Exits with ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM), the
    shell's convention, so a job scheduler sees that the run did not finish.
    """

    prefix = ""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def debug_enabled() -> bool:
    """Tracebacks are shown when ``CLEXLAB_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) is set."""
    return os.environ.get("CLEXLAB_DEBUG", "0") not in ("", "0") or os.environ.get("HYDRA_FULL_ERROR") == "1"


def _is_misconfiguration(err: BaseException) -> bool:
    # Lightning's MisconfigurationException (bad Trainer flags: devices, accelerator, strategy),
    # matched by name so this module does not import Lightning.
    return any(cls.__name__ == "MisconfigurationException" for cls in type(err).__mro__)


def find_user_error(err: BaseException | None) -> BaseException | None:
    """The user-fixable error behind ``err``: itself, or one it was raised ``from``.

    Hydra's ``instantiate`` wraps whatever a constructor raised (a
    :class:`UserError` from a corpus, Lightning's MisconfigurationException
    from the Trainer) in an ``InstantiationException``; the cause is the news.
    """
    from omegaconf.errors import OmegaConfBaseException

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (UserError, OmegaConfBaseException)) or _is_misconfiguration(err):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def report_user_errors(fn: F) -> F:
    """Turn user-fixable errors into one line on stderr and exit 2.

    Covered: :class:`UserError`, config validation errors, Lightning's
    MisconfigurationException, and any of them wrapped by Hydra's ``instantiate``.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            # Ctrl-C outside training (during tokenization, say): nothing to save, no traceback.
            if debug_enabled():
                raise
            print("interrupted (Ctrl-C)", file=sys.stderr)
            sys.exit(130)
        except Exception as err:
            found = find_user_error(err)
            if found is None or debug_enabled():
                raise
            prefix = getattr(found, "prefix", "error: ") + ("trainer: " if _is_misconfiguration(found) else "")
            print(f"{prefix}{one_line(found)}", file=sys.stderr)
            sys.exit(getattr(found, "exit_code", EXIT_USER_ERROR))

    return wrapper  # type: ignore[return-value]
