"""Summarize many runs' ``results.json``: one table, one JSON, one plot.

    python -m clexlab.summarize multirun/2026-11-22/10-00-00            # writes there
    python -m clexlab.summarize outputs/a outputs/b --out report/

Runs are grouped by their method label (``clex``, ``clex-frozen``,
``yarn-x8``, ``none+pos``, ...). With several seeds per method every cell
shows the mean and the standard deviation over seeds. The ratio columns
divide each run's perplexity by that run's own perplexity at L before
averaging, so they measure extrapolation, not how well L itself was fit.
Runs that also scored retrieval (``passkey``, ``ruler``, ``needle_nll`` in
their ``results.json``) get one table per retrieval score, in percent per
length, and a panel each in the plot.

The summary goes into a directory the user owns (a sweep directory, or
``--out``), so it never replaces a file it did not write: each file is written
atomically, ``.clexlab-summary.json`` records the SHA-256 of what was written,
and a ``summary.md`` (or ``.json``, ``.png``) that is not in that record, or
was edited since, is refused in one line before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from clexlab.evaluation.report import write_bytes_atomic, write_json
from clexlab.utils.errors import UserError, describe

#: Names and SHA-256 of the files the last summary wrote into a directory: only those may be replaced.
MANIFEST = ".clexlab-summary.json"


def find_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``paths`` (files or directories), with ``run_dir`` added."""
    found = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for file in files:
            try:
                payload = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise UserError(f"{file} is not readable JSON ({describe(err)}): remove that run or rerun it") from err
            if isinstance(payload, dict) and "ppl" in payload and "train_length" in payload:
                found.append({**payload, "run_dir": str(file.parent)})
    return found


def _label(run: dict[str, Any]) -> str:
    return str(run.get("method") or run.get("rope") or Path(run["run_dir"]).name)


def _mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def retrieval_scores(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A run's retrieval scores in percent per length: ``{name: {"<length>": score}}``.

    ``passkey`` (accuracy, mean over depths), ``ruler`` (average over tasks),
    ``ruler/<task>`` (each task), ``needle`` (teacher-forced per-digit accuracy).
    Lengths a task skipped (too short for its prompt) are left out.
    """
    out: dict[str, dict[str, float]] = {}
    passkey = run.get("passkey")
    if passkey:
        for n, row in zip(passkey["lengths"], passkey["accuracy"]):
            ran = [v for v in row if v is not None]
            if ran:
                out.setdefault("passkey", {})[str(n)] = 100.0 * sum(ran) / len(ran)
    ruler = run.get("ruler")
    if ruler:
        out["ruler"] = {n: v for n, v in ruler["average"].items() if v is not None}
        for task in ruler["tasks"]:
            out[f"ruler/{task}"] = {n: v for n, v in ruler["score"][task].items() if v is not None}
    needle = run.get("needle_nll")
    if needle:
        out["needle"] = {n: 100.0 * v for n, v in needle["digit_accuracy"].items() if v is not None}
    return {name: cells for name, cells in out.items() if cells}


RETRIEVAL_TITLES = {
    "passkey": "Passkey accuracy (%, mean over depths)",
    "ruler": "RULER average (%, over its tasks)",
    "needle": "Needle per-digit accuracy (%, teacher-forced)",
}


def _retrieval_title(name: str) -> str:
    return RETRIEVAL_TITLES.get(name) or f"RULER {name.split('/', 1)[1]} (%)"


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and length: perplexity and ratio to PPL(L), and retrieval scores, mean/std/n over runs (seeds)."""
    if not runs:
        raise ValueError("no results.json found")
    train_lengths = {int(r["train_length"]) for r in runs}
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_method[_label(run)].append(run)
    lengths = sorted({int(n) for r in runs for n in r["ppl"]})
    methods = {}
    for method, group in sorted(by_method.items()):
        cells = {}
        for n in lengths:
            ppl = [r["ppl"][str(n)] for r in group if str(n) in r["ppl"]]
            ratio = [
                r["ppl"][str(n)] / r["ppl"][str(r["train_length"])]
                for r in group
                if str(n) in r["ppl"] and str(r["train_length"]) in r["ppl"]
            ]
            if ppl:
                cells[str(n)] = {"ppl": _mean_std(ppl), "ratio": _mean_std(ratio) if ratio else None}
        methods[method] = {"runs": [r["run_dir"] for r in group], "seeds": sorted({r.get("seed") for r in group}, key=str), "lengths": cells}
        scores = [retrieval_scores(r) for r in group]
        retrieval: dict[str, dict[str, dict[str, float]]] = {}
        for name in sorted({k for sc in scores for k in sc}):
            for n in sorted({n for sc in scores for n in sc.get(name, {})}, key=int):
                values = [sc[name][n] for sc in scores if n in sc.get(name, {})]
                retrieval.setdefault(name, {})[n] = _mean_std(values)
        if retrieval:
            methods[method]["retrieval"] = retrieval
    names = {k for info in methods.values() for k in info.get("retrieval", {})}
    order = ["passkey", "ruler", *sorted(k for k in names if k.startswith("ruler/")), "needle"]
    return {"train_lengths": sorted(train_lengths), "lengths": lengths, "methods": methods,
            "retrieval": [k for k in order if k in names]}


def _cell(stat: dict[str, float] | None, digits: int) -> str:
    if stat is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    return f"{text} ± {stat['std']:.{digits}f}" if stat["n"] > 1 else text


def format_markdown(summary: dict[str, Any]) -> str:
    """Two tables: perplexity per method × length, and ratio to the method's own PPL at L."""
    lengths = summary["lengths"]
    L = summary["train_lengths"][0]
    head = "| method | runs | " + " | ".join(f"{n} ({n / L:g}×L)" for n in lengths) + " |"
    rule = "|---|---:|" + "---:|" * len(lengths)
    out = ["## Perplexity", "", head, rule]
    for method, info in summary["methods"].items():
        cells = [_cell(info["lengths"].get(str(n), {}).get("ppl"), 3) for n in lengths]
        out.append(f"| {method} | {len(info['runs'])} | " + " | ".join(cells) + " |")
    out += ["", "## Ratio to the method's own PPL at L", "", head, rule]
    for method, info in summary["methods"].items():
        cells = [_cell(info["lengths"].get(str(n), {}).get("ratio"), 3) for n in lengths]
        out.append(f"| {method} | {len(info['runs'])} | " + " | ".join(cells) + " |")
    for name in summary.get("retrieval", []):
        rows = {m: info.get("retrieval", {}).get(name, {}) for m, info in summary["methods"].items()}
        cols = sorted({int(n) for cells in rows.values() for n in cells})
        out += ["", f"## {_retrieval_title(name)}", "",
                "| method | runs | " + " | ".join(f"{n} ({n / L:g}×L)" for n in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for method, cells in rows.items():
            if cells:
                runs = len(summary["methods"][method]["runs"])
                out.append(f"| {method} | {runs} | " + " | ".join(_cell(cells.get(str(n)), 1) for n in cols) + " |")
    out.append("")
    out.append("Cells with several runs show mean ± standard deviation over seeds; – marks a length a run did not score.")
    return "\n".join(out) + "\n"


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """``ppl_vs_length.png``: one curve per method (mean, error bars over seeds), log y; retrieval panels beside it.

    The retrieval panels (passkey accuracy, RULER average) appear when runs scored them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("passkey", "ruler") if k in summary.get("retrieval", [])]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(6.5 * (1 + len(panels)), 4.2), squeeze=False)
    ax = axes[0][0]
    for method, info in summary["methods"].items():
        xs = [n for n in summary["lengths"] if str(n) in info["lengths"]]
        stats = [info["lengths"][str(n)]["ppl"] for n in xs]
        ax.errorbar(xs, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o", capsize=3, label=method)
    for L in summary["train_lengths"]:
        ax.axvline(L, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("held-out perplexity")
    ax.set_title("Perplexity vs length")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    for ax, name in zip(axes[0][1:], panels):
        for method, info in summary["methods"].items():
            cells = info.get("retrieval", {}).get(name, {})
            xs = sorted(int(n) for n in cells)
            if xs:
                stats = [cells[str(n)] for n in xs]
                ax.errorbar(xs, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], marker="o", capsize=3, label=method)
        for L in summary["train_lengths"]:
            ax.axvline(L, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-5, 105)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("score (%)")
        ax.set_title(_retrieval_title(name))
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _written_here(out_dir: Path) -> dict[str, str]:
    """``{name: sha256}`` of what the last summary wrote into ``out_dir`` (empty when unknown)."""
    try:
        record = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = record.get("files") if isinstance(record, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def check_replaceable(out_dir: str | Path, names: list[str]) -> None:
    """Refuse when one of ``names`` in ``out_dir`` exists and is not exactly what a summary wrote there.

    Raises:
        UserError: naming the file; nothing has been written.
    """
    out_dir = Path(out_dir)
    ours = _written_here(out_dir)
    for name in names:
        file = out_dir / name
        if file.exists() and (not file.is_file() or ours.get(name) != _sha256(file)):
            raise UserError(
                f"{file} exists and was not written by clexlab's summary (or was edited since): nothing was "
                "replaced; move it away, or write the summary elsewhere with python -m clexlab.summarize <runs> --out DIR"
            )


def write_summary(out_dir: str | Path, runs: list[dict[str, Any]], own_directory: bool = False) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.json`` and ``ppl_vs_length.png`` into ``out_dir``.

    Each file is written atomically, and only over a file an earlier summary
    wrote and nobody changed since (see the module docstring).

    Args:
        out_dir: where to write.
        runs: the runs' ``results.json`` payloads (:func:`find_results`).
        own_directory: ``out_dir`` is the calling run's own directory (``experiment=extrapolation``
            summarizing its rows, also when resumed there): its summary files are its own to replace.

    Raises:
        UserError: one of the three files is someone else's; nothing is written.
    """
    out_dir = Path(out_dir)
    names = {"md": "summary.md", "json": "summary.json", "png": "ppl_vs_length.png"}
    if not own_directory:
        check_replaceable(out_dir, list(names.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    files = {
        "md": write_bytes_atomic(out_dir / names["md"], format_markdown(summary).encode("utf-8")),
        "json": write_json(out_dir / names["json"], summary),
        "png": plot(summary, out_dir / names["png"]),
    }
    write_json(out_dir / MANIFEST, {"files": {path.name: _sha256(path) for path in files.values()}})
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clexlab.summarize", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run directories, multirun directories or results.json files")
    parser.add_argument("--out", help="where to write the summary (default: the first path)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: {missing[0]} does not exist: pass run or multirun directories", file=sys.stderr)
        return 2
    try:
        runs = find_results(args.paths)
        if not runs:
            raise UserError(f"no results.json under {', '.join(args.paths)}: did the runs finish?")
        out = Path(args.out or (args.paths[0] if Path(args.paths[0]).is_dir() else Path(args.paths[0]).parent))
        files = write_summary(out, runs)
    except UserError as err:
        print(f"{err.prefix}{err}", file=sys.stderr)
        return err.exit_code
    print(files["md"].read_text())
    print(f"wrote {files['md']}, {files['json']}, {files['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
