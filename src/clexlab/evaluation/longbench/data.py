"""Reading LongBench from a local directory of jsonl files, with one-line errors.

LongBench's data (THUDM/LongBench on the Hugging Face hub, ``data.zip``) is
one ``<dataset>.jsonl`` per dataset, and ``<dataset>_e.jsonl`` for
LongBench-E; each line is a record with the fields in
:data:`~clexlab.evaluation.longbench.config.FIELDS`. Nothing is downloaded:
the user puts the files in a directory and passes ``eval.longbench.dir``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clexlab.evaluation.longbench.config import DATASETS, FIELDS
from clexlab.utils.errors import UserError

log = logging.getLogger("clexlab")
WHERE = (
    "put LongBench's <dataset>.jsonl files (e.g. narrativeqa.jsonl, from data.zip of THUDM/LongBench) "
    "in a local directory and pass eval.longbench.dir=/path/to/it"
)


@dataclass
class LongBenchFile:
    """One dataset's file: its dataset, whether it is LongBench-E, and its records."""

    dataset: str
    path: Path
    extended: bool
    records: list[dict[str, Any]]


def dataset_of(path: Path) -> tuple[str | None, bool]:
    """``(dataset, is LongBench-E)`` of a file name, or ``(None, False)`` when it names no dataset."""
    stem = path.stem
    if stem in DATASETS:
        return stem, False
    if stem.endswith("_e") and stem[:-2] in DATASETS:
        return stem[:-2], True
    return None, False


def read_records(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The records of one jsonl file (the first ``limit``), each checked for LongBench's fields.

    Raises:
        UserError: a line that is not JSON, or a record missing fields (naming the file and line).
    """
    records = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not a JSON line ({err.msg}); LongBench files hold one JSON record per line") from err
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: a LongBench record must be a JSON object, got {type(record).__name__}")
            missing = [k for k in FIELDS if k not in record]
            if missing:
                raise UserError(f"{path}:{number}: missing field(s) {missing}; a LongBench record has {list(FIELDS)}")
            if not isinstance(record["answers"], list) or not all(isinstance(a, str) for a in record["answers"]):
                raise UserError(f"{path}:{number}: 'answers' must be a list of strings, got {record['answers']!r:.80}")
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    return records


def load_longbench(directory: str | Path, datasets: Sequence[str] | None = None, limit: int | None = None) -> list[LongBenchFile]:
    """The LongBench files of ``directory``: the named ``datasets``, or every known dataset found.

    Args:
        directory: the local directory (``eval.longbench.dir``).
        datasets: dataset names to read (both ``<name>.jsonl`` and ``<name>_e.jsonl`` count); None: all found.
        limit: read at most this many records per file.

    Raises:
        UserError: the directory is missing or holds none of the files, or a file is malformed.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise UserError(f"eval.longbench.dir={root} is not a directory: {WHERE}")
    found: dict[str, list[tuple[Path, bool]]] = {}
    for path in sorted(root.glob("*.jsonl")):
        name, extended = dataset_of(path)
        if name is None:
            log.warning("longbench: %s names no LongBench dataset: ignored", path.name)
            continue
        found.setdefault(name, []).append((path, extended))
    wanted = list(datasets) if datasets else sorted(found)
    missing = [d for d in wanted if d not in found]
    if not wanted or missing:
        what = f"no file for {missing}" if missing else "no LongBench file"
        raise UserError(f"eval.longbench.dir={root} has {what} (expected <dataset>.jsonl, e.g. narrativeqa.jsonl): {WHERE}")
    files = []
    for name in wanted:
        for path, extended in found[name]:
            files.append(LongBenchFile(name, path, extended, read_records(path, limit)))
    return files
