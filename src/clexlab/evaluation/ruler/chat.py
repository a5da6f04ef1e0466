"""The ``chat_template`` switch of RULER and LongBench: wrap a task as the user turn of an instruction model."""

from __future__ import annotations

from typing import Any

from clexlab.utils.errors import UserError


def _backend(tokenizer: Any) -> Any:
    # clexlab's HFTokenizer keeps the transformers tokenizer in ``_tok``; a transformers tokenizer is its own backend.
    for candidate in (tokenizer, getattr(tokenizer, "_tok", None)):
        if candidate is not None and getattr(candidate, "chat_template", None) and hasattr(candidate, "apply_chat_template"):
            return candidate
    return None


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return _backend(tokenizer) is not None


def chat_wrap(tokenizer: Any, text: str, key: str = "eval.ruler.chat_template") -> str:
    """``text`` as one user message, rendered by the tokenizer's chat template with the assistant turn opened.

    The rendered text carries the template's own special tokens (e.g. BOS), so
    callers encode it without adding a BOS of their own.

    Raises:
        UserError: the tokenizer has no chat template (naming ``key``).
    """
    backend = _backend(tokenizer)
    if backend is None:
        raise UserError(f"{key}=true needs a tokenizer with a chat template, and this model's has none: set {key}=false")
    return backend.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
