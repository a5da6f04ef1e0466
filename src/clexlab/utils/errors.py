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


def debug_enabled() -> bool:
    """Tracebacks are shown when ``CLEXLAB_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) is set."""
    return os.environ.get("CLEXLAB_DEBUG", "0") not in ("", "0") or os.environ.get("HYDRA_FULL_ERROR") == "1"


def report_user_errors(fn: F) -> F:
    """Turn :class:`UserError` and config validation errors into one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from omegaconf.errors import OmegaConfBaseException

        try:
            return fn(*args, **kwargs)
        except (UserError, OmegaConfBaseException) as err:
            if debug_enabled():
                raise
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
