"""Read a JSON object a user hands clexlab (a model's config.json, a tokenizer file), with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clexlab.utils.errors import UserError, describe


def read_json_object(file: Path, fix: str) -> dict[str, Any]:
    """The JSON object in ``file``.

    Args:
        file: the file to read.
        fix: what the user should do when it is not one (the end of the message).

    Raises:
        UserError: the file is unreadable, not UTF-8, not JSON, or holds another JSON value than an object.
    """
    try:
        content = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
        raise UserError(f"{file} is not readable JSON ({describe(err)}): {fix}") from err
    if not isinstance(content, dict):
        raise UserError(f"{file} holds a JSON {type(content).__name__}, not an object: {fix}")
    return content
