"""Summarize many runs' ``results.json``: one table, one JSON, one plot.

    python -m clexlab.summarize multirun/2026-11-22/10-00-00            # writes there
    python -m clexlab.summarize outputs/a outputs/b --out report/

Runs are grouped by their method label (``clex``, ``clex-frozen``,
``yarn-x8``, ``none+pos``, ...). With several seeds per method every cell
shows the mean and the standard deviation over seeds. The ratio columns
divide each run's perplexity by that run's own perplexity at L before
averaging, so they measure extrapolation, not how well L itself was fit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from clexlab.evaluation.report import write_json


def find_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``paths`` (files or directories), with ``run_dir`` added."""
    found = []
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("results.json"))
        for file in files:
            payload = json.loads(file.read_text())
            if "ppl" in payload and "train_length" in payload:
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


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and length: perplexity and ratio to PPL(L), mean/std/n over runs (seeds)."""
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
    return {"train_lengths": sorted(train_lengths), "lengths": lengths, "methods": methods}


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
    out.append("")
    out.append("Cells with several runs show mean ± standard deviation over seeds.")
    return "\n".join(out) + "\n"


def plot(summary: dict[str, Any], path: str | Path) -> Path:
    """``ppl_vs_length.png``: one curve per method (mean, error bars over seeds), log y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(out_dir: str | Path, runs: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.json`` and ``ppl_vs_length.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    md = out_dir / "summary.md"
    md.write_text(format_markdown(summary))
    return {"md": md, "json": write_json(out_dir / "summary.json", summary), "png": plot(summary, out_dir / "ppl_vs_length.png")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clexlab.summarize", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="run directories, multirun directories or results.json files")
    parser.add_argument("--out", help="where to write the summary (default: the first path)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"error: {missing[0]} does not exist: pass run or multirun directories", file=sys.stderr)
        return 2
    runs = find_results(args.paths)
    if not runs:
        print(f"error: no results.json under {', '.join(args.paths)}: did the runs finish?", file=sys.stderr)
        return 2
    out = Path(args.out or (args.paths[0] if Path(args.paths[0]).is_dir() else Path(args.paths[0]).parent))
    files = write_summary(out, runs)
    print(files["md"].read_text())
    print(f"wrote {files['md']}, {files['json']}, {files['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
