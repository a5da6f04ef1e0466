"""Tables and results.json for long-context perplexity."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clexlab.evaluation.perplexity import LengthResult


def format_table(results: Mapping[int, LengthResult], train_length: int) -> str:
    """A markdown table: length, multiple of L, perplexity, ratio to PPL at L, targets."""
    base = results.get(train_length)
    lines = ["| length | × L | ppl | ppl / ppl@L | targets |", "|---:|---:|---:|---:|---:|"]
    for length in sorted(results):
        r = results[length]
        ratio = f"{r.ppl / base.ppl:.3f}" if base else "–"
        lines.append(f"| {length} | {length / train_length:g} | {r.ppl:.3f} | {ratio} | {r.tokens} |")
    return "\n".join(lines)


def results_payload(results: Mapping[int, LengthResult], train_length: int, **extra: Any) -> dict[str, Any]:
    """The ``results.json`` schema: ``train_length``, ``ppl`` per length (string keys), ``nll``, ``tokens``, extras."""
    return {
        "train_length": int(train_length),
        "ppl": {str(n): results[n].ppl for n in sorted(results)},
        "nll": {str(n): results[n].nll_sum / max(results[n].tokens, 1) for n in sorted(results)},
        "tokens": {str(n): results[n].tokens for n in sorted(results)},
        **extra,
    }


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path
