"""Tables and results.json for long-context perplexity."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clexlab.evaluation.perplexity import LengthResult


@dataclass
class TaskReport:
    """What one evaluation task (RULER, needle_nll, LongBench) hands the workflow.

    Attributes:
        key: its entry in ``results.json``.
        payload: that entry.
        title: the heading of its section in ``report.md``.
        table: its markdown table (printed and put in the report).
        metrics: scalar metrics for the loggers (``eval/ruler@4096``, ...).
        tables: ``{name: (columns, rows)}`` for loggers that take tables (W&B).
        images: ``{name: path}`` of its figures.
    """

    key: str
    payload: dict[str, Any]
    title: str
    table: str
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)


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


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    Readers, and a run killed mid-write, see the previous file or the new one,
    never part of one; the temporary file is removed when writing fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results are for everyone who can read the directory
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as JSON atomically (temporary file, then rename)."""
    return write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def format_passkey_table(passkey: Mapping[str, Any]) -> str:
    """A markdown table of passkey accuracy: one row per length, one column per depth, and the mean."""
    depths = list(passkey["depths"])
    header = "| length | " + " | ".join(f"depth {d:g}" for d in depths) + " | mean |"
    rule = "|---:|" + "---:|" * (len(depths) + 1)
    lines = [header, rule]
    for n, row in zip(passkey["lengths"], passkey["accuracy"]):
        ran = [v for v in row if v is not None]
        cells = [_cell(v) for v in row] + [_cell(sum(ran) / len(ran) if ran else None)]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    # None: the length could not hold the prompt without filler, so the cell did not run.
    return "–" if value is None else f"{value:.2f}"


def _ppl_table_from_payload(payload: Mapping[str, Any]) -> str:
    train_length = int(payload["train_length"])
    results = {
        int(n): LengthResult(int(n), float(payload["nll"][n]) * int(payload["tokens"][n]), int(payload["tokens"][n]))
        for n in payload.get("ppl", {})
    }
    return format_table(results, train_length)


def format_report(
    payload: Mapping[str, Any], images: Mapping[str, str] | None = None, sections: Sequence[TaskReport] = ()
) -> str:
    """``report.md``: what was evaluated, the perplexity and passkey tables, the other tasks' tables, the figures.

    Args:
        payload: the ``results.json`` payload (``ppl``/``nll``/``tokens`` and optionally ``passkey``).
        images: ``{caption: relative path}`` of the figures to link.
        sections: the other tasks' reports, each a titled table.
    """
    lines = ["# Long-context evaluation", ""]
    about = [
        ("model", payload.get("model")),
        ("source", payload.get("checkpoint") or payload.get("model_path")),
        ("rope", payload.get("rope")),
        ("train length L", payload.get("train_length")),
        ("t_max", payload.get("max_scale")),
        ("split", payload.get("split")),
    ]
    lines += [f"- {name}: `{value}`" for name, value in about if value is not None]
    if payload.get("ppl"):
        protocol = payload.get("protocol", "chunks")
        detail = f", stride {payload['stride']}" if protocol == "sliding" and payload.get("stride") else ""
        targets = next(iter(payload["tokens"].values()))
        lines += ["", f"## Perplexity ({protocol}{detail}; {targets} target tokens per length)", ""]
        lines.append(_ppl_table_from_payload(payload))
    if payload.get("passkey"):
        pk = payload["passkey"]
        lines += ["", f"## Passkey retrieval ({pk.get('n_samples', '?')} keys per cell, seed {pk.get('seed', '?')})", ""]
        lines.append(format_passkey_table(pk))
    for section in sections:
        lines += ["", f"## {section.title}", "", section.table]
    if images:
        lines += ["", "## Figures", ""]
        lines += [f"![{caption}]({rel})" for caption, rel in images.items()]
    return "\n".join(lines) + "\n"
