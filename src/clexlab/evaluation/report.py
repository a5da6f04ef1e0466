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


def format_report(payload: Mapping[str, Any], images: Mapping[str, str] | None = None) -> str:
    """``report.md``: what was evaluated, the perplexity and passkey tables, the figures.

    Args:
        payload: the ``results.json`` payload (``ppl``/``nll``/``tokens`` and optionally ``passkey``).
        images: ``{caption: relative path}`` of the figures to link.
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
    if images:
        lines += ["", "## Figures", ""]
        lines += [f"![{caption}]({rel})" for caption, rel in images.items()]
    return "\n".join(lines) + "\n"
