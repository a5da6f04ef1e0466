"""The curriculum study (``python train.py experiment=curriculum_study``) and its three goals.

The extrapolation protocol (:mod:`clexlab.workflows.extrapolation`) with one
CLEX row per (curriculum, variant) pair added after the baselines: every
curriculum of ``protocol.curricula`` (nodes of ``conf/curriculum/``) trains
CLEX once per entry of ``protocol.clex_variants`` (the learned ODE, then the
frozen one), every trained row once per seed of ``protocol.seeds``. After the
summary it checks the issue's goals on the means over seeds and writes
``goals.md`` / ``goals.json``:

1. CLEX's PPL(L) within ``ppl_margin`` of the ``role: reference`` row's (plain
   continued training);
2. CLEX's PPL at ``long_multiple`` x L below the ``role: rival`` row's (YaRN),
   with PPL(``ratio_multiple`` L) / PPL(L) at most ``max_ratio``;
3. where the learned ODE beats the frozen one, and by how much beyond the
   seed spread (the sum of the two standard deviations).

``python -m clexlab.workflows.curriculum_study <study dir>`` recomputes the
goals from the directory's ``summary.json`` and ``study.json``.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from clexlab.utils.errors import UserError

ROLES = ("reference", "rival")


def run_curriculum_study(cfg: DictConfig) -> dict[str, Any]:
    """Run the study into ``paths.output_dir``: the protocol's rows, the summary, then the goals."""
    from clexlab.workflows.extrapolation import run_extrapolation

    protocol = cfg.protocol
    curricula = {name: node for name, node in (protocol.get("curricula") or {}).items() if node is not None}
    variants = list(protocol.get("clex_variants") or [{}])
    if not curricula:
        raise UserError("protocol.curricula is empty: name at least one conf/curriculum option")
    if len(variants) != 2:
        raise UserError("protocol.clex_variants must list two clex overrides: the learned ODE, then the frozen one")
    study = copy.deepcopy(cfg)
    rows: list[dict[str, Any]] = [{"role": e.get("role")} for e in protocol.methods]
    with open_dict(study):
        methods = list(study.protocol.methods)
        for name, node in curricula.items():
            for index, clex in enumerate(variants):
                methods.append(OmegaConf.create({"rope": {"name": "clex", "factor": 1.0}, "clex": clex, "curriculum": node}))
                rows.append({"curriculum": name, "variant": ("learned", "frozen")[index]})
        study.protocol.methods = methods
    result = run_extrapolation(study)
    for row, label in zip(rows, result["labels"]):
        row["label"] = label
    root = Path(cfg.paths.output_dir)
    manifest = {"rows": rows, "goals": OmegaConf.to_container(protocol.goals, resolve=True)}
    (root / "study.json").write_text(json.dumps(manifest, indent=2) + "\n")
    files = write_goals(root)
    print(files["md"].read_text())
    return {**result, "goals": str(files["md"])}


def write_goals(root: str | Path) -> dict[str, Path]:
    """``goals.md`` and ``goals.json`` from ``summary.json`` and ``study.json`` in ``root``."""
    root = Path(root)
    summary = json.loads((root / "summary.json").read_text())
    manifest = json.loads((root / "study.json").read_text())
    goals = evaluate_goals(summary, manifest["rows"], manifest["goals"])
    goals["drift"] = ode_drift(summary, manifest["rows"])
    md, js = root / "goals.md", root / "goals.json"
    md.write_text(format_goals(goals))
    js.write_text(json.dumps(goals, indent=2) + "\n")
    return {"md": md, "json": js}


def evaluate_goals(summary: dict[str, Any], rows: list[dict[str, Any]], goals: dict[str, Any]) -> dict[str, Any]:
    """The three goals on a summary (:func:`clexlab.summarize.summarize`'s dict), row by row.

    Args:
        summary: perplexity mean/std/n per label and length.
        rows: ``study.json``'s rows: ``label`` and either ``role`` (reference/rival) or
            ``curriculum`` + ``variant`` (learned/frozen).
        goals: ``ppl_margin``, ``long_multiple``, ``ratio_multiple``, ``max_ratio``.
    """
    L = int(summary["train_lengths"][0])
    methods = summary["methods"]

    def cell(label: str, multiple: int, key: str = "ppl") -> dict[str, float] | None:
        found = methods.get(label, {}).get("lengths", {}).get(str(multiple * L))
        return found.get(key) if found else None

    role = {r["role"]: r["label"] for r in rows if r.get("role") in ROLES}
    missing = [name for name in ROLES if name not in role]
    if missing:
        raise UserError(f"protocol.methods needs a row with role: {missing[0]} (the goals compare CLEX with it)")
    clex = [r for r in rows if r.get("curriculum")]
    long_m, ratio_m = int(goals["long_multiple"]), int(goals["ratio_multiple"])
    reference, rival = cell(role["reference"], 1), cell(role["rival"], long_m)
    one, two = [], []
    for r in clex:
        ppl_l, ppl_long, ratio = cell(r["label"], 1), cell(r["label"], long_m), cell(r["label"], ratio_m, "ratio")
        excess = ppl_l["mean"] / reference["mean"] - 1 if ppl_l and reference else None
        one.append({**r, "ppl": ppl_l, "excess": excess, "met": excess is not None and excess <= goals["ppl_margin"]})
        met = bool(ppl_long and rival and ratio and ppl_long["mean"] < rival["mean"] and ratio["mean"] <= goals["max_ratio"])
        two.append({**r, "ppl_long": ppl_long, "ratio": ratio, "met": met})
    three = []
    for name in dict.fromkeys(r["curriculum"] for r in clex):
        pair = {r["variant"]: r["label"] for r in clex if r["curriculum"] == name}
        if set(pair) != {"learned", "frozen"}:
            continue
        cells = {}
        for n in summary["lengths"]:
            learned, frozen = cell(pair["learned"], n // L), cell(pair["frozen"], n // L)
            if learned and frozen:
                delta, spread = frozen["mean"] - learned["mean"], learned["std"] + frozen["std"]
                seeded = min(learned.get("n", 1), frozen.get("n", 1)) > 1  # one seed has no spread to beat
                cells[str(n)] = {"delta": delta, "spread": spread if seeded else None, "beyond_spread": seeded and delta > spread}
        three.append({"curriculum": name, **pair, "lengths": cells, "met": any(c["beyond_spread"] for c in cells.values())})
    both = [a["label"] for a, b in zip(one, two) if a["met"] and b["met"]]
    return {
        "train_length": L, "settings": goals, "reference": {"label": role["reference"], "ppl": reference},
        "rival": {"label": role["rival"], "ppl": rival}, "goal1": one, "goal2": two, "goal3": three,
        "met": {"goal1": [r["label"] for r in one if r["met"]], "goal2": [r["label"] for r in two if r["met"]],
                "goal1_and_2": both, "goal3": [r["curriculum"] for r in three if r["met"]],
                "goal3_frozen": [r["curriculum"] for r in three
                                 if any(c["spread"] is not None and -c["delta"] > c["spread"] for c in r["lengths"].values())]},
    }


def ode_drift(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How far each learned ODE moved from its NTK start: ``log inv_freq`` minus NTK's at t_max, mean over seeds.

    Read from the ``clex_frequencies.png`` every CLEX run writes (its data:
    four frequency indices, learned / NTK / PI log-frequencies over t).
    Positive: the frequency rotates faster than NTK's (less interpolation).
    """
    from clexlab.evaluation import read_png_data

    out = []
    for r in rows:
        if r.get("variant") != "learned" or r["label"] not in summary["methods"]:
            continue
        drifts, indices, t_max = [], None, None
        for run in summary["methods"][r["label"]]["runs"]:
            png = Path(run) / "clex_frequencies.png"
            if not png.is_file():
                continue
            data = read_png_data(png)
            last = len(data["t"]) - 1
            indices, t_max = data["indices"], data["t"][last]
            drifts.append([learned[last] - ntk[last] for learned, ntk in zip(data["learned"], data["ntk"])])
        if drifts:
            mean = [sum(col) / len(col) for col in zip(*drifts)]
            out.append({"label": r["label"], "curriculum": r["curriculum"], "t": t_max, "indices": indices, "drift": mean,
                        "runs": len(drifts)})
    return out


def _ms(stat: dict[str, float] | None) -> str:
    if not stat:
        return "–"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat.get("n", 1) > 1 else f"{stat['mean']:.3f}"


def format_goals(goals: dict[str, Any]) -> str:
    """The goals as markdown: a verdict per goal, then the evidence row by row."""
    s, L, met = goals["settings"], goals["train_length"], goals["met"]
    ref, rival = goals["reference"], goals["rival"]
    yes = lambda ok: "**met**" if ok else "not met"
    out = [
        "# Goals (means over seeds; ± one standard deviation)", "",
        f"- Goal 1, PPL(L) within {s['ppl_margin']:.0%} of {ref['label']} ({_ms(ref['ppl'])}): "
        + (f"**met** by {', '.join(met['goal1'])}" if met["goal1"] else "**not met** by any CLEX row"),
        f"- Goal 2, PPL({s['long_multiple']}L) below {rival['label']} ({_ms(rival['ppl'])}) with "
        f"PPL({s['ratio_multiple']}L)/PPL(L) <= {s['max_ratio']}: "
        + (f"**met** by {', '.join(met['goal2'])}" if met["goal2"] else "**not met** by any CLEX row"),
        "- Goals 1 and 2 by the same row: " + (", ".join(met["goal1_and_2"]) or "none"),
        "- Goal 3, learned ODE better than frozen by more than the seed spread somewhere: "
        + (f"yes, under {', '.join(met['goal3'])}" if met["goal3"] else "nowhere")
        + " (frozen beyond the spread: " + (", ".join(met["goal3_frozen"]) or "nowhere") + ")",
        "", f"## Goal 1: PPL(L = {L})", "", "| row | curriculum | ODE | PPL(L) | vs reference | goal 1 |", "|---|---|---|---:|---:|---|",
    ]
    for r in goals["goal1"]:
        excess = "–" if r["excess"] is None else f"{r['excess']:+.1%}"
        out.append(f"| {r['label']} | {r['curriculum']} | {r['variant']} | {_ms(r['ppl'])} | {excess} | {yes(r['met'])} |")
    out += ["", f"## Goal 2: PPL({s['long_multiple']}L) and PPL({s['ratio_multiple']}L)/PPL(L)", "",
            f"| row | PPL({s['long_multiple']}L) | PPL({s['ratio_multiple']}L)/PPL(L) | goal 2 |", "|---|---:|---:|---|"]
    for r in goals["goal2"]:
        out.append(f"| {r['label']} | {_ms(r['ppl_long'])} | {_ms(r['ratio'])} | {yes(r['met'])} |")
    lengths = sorted({int(n) for r in goals["goal3"] for n in r["lengths"]})
    out += ["", "## Goal 3: frozen − learned PPL (spread = σ learned + σ frozen); * = beyond the spread", "",
            "| curriculum | " + " | ".join(f"{n} ({n // L}×L)" for n in lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for r in goals["goal3"]:
        cells = []
        for n in lengths:
            c = r["lengths"].get(str(n))
            if c is None:
                cells.append("–")
            else:
                spread = "one seed" if c["spread"] is None else f"{c['spread']:.3f}"
                cells.append(f"{c['delta']:+.3f} ({spread}){'*' if c['beyond_spread'] else ''}")
        out.append(f"| {r['curriculum']} | " + " | ".join(cells) + " |")
    if goals.get("drift"):
        first = goals["drift"][0]
        out += ["", f"## Learned ODE at t = {first['t']:g}: log-frequency minus NTK's (α = 2t − 1), mean over seeds", "",
                "Positive: that frequency turns faster than under the frozen (NTK) schedule, i.e. less interpolation.", "",
                "| row | " + " | ".join(f"index {i}" for i in first["indices"]) + " |", "|---|" + "---:|" * len(first["indices"])]
        for r in goals["drift"]:
            out.append(f"| {r['label']} | " + " | ".join(f"{d:+.3f}" for d in r["drift"]) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "study.json").is_file():
        print("usage: python -m clexlab.workflows.curriculum_study <study dir with summary.json and study.json>", file=sys.stderr)
        return 2
    files = write_goals(args[0])
    print(files["md"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
