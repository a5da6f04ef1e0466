"""User-facing errors: one clear line, a non-zero exit, no traceback by default."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix: a wrong value, a missing path. The message says how."""

    prefix = "error: "
    exit_code = EXIT_USER_ERROR


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
