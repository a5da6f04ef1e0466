"""LongBench prediction and scoring as THUDM/LongBench's ``pred.py`` and ``eval.py`` do them.

Per record: the dataset's template is filled with ``context`` and ``input``;
a prompt longer than the budget keeps its first and last half-budget tokens
(the question and instructions sit at both ends); the chat template applies
unless the dataset is one LongBench leaves plain; decoding is greedy up to
the dataset's maximum output length (samsum also stops at a newline and
emits at least one token). A dataset's score is the mean record score x 100;
LongBench-E files are also split by the records' ``length`` (0-4k, 4-8k, 8k+).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clexlab.data.tokenizer import Tokenizer
from clexlab.evaluation.longbench.config import DATASETS, LongBenchDataset
from clexlab.evaluation.longbench.data import LongBenchFile, load_longbench
from clexlab.evaluation.longbench.metrics import score_record
from clexlab.evaluation.report import TaskReport
from clexlab.evaluation.ruler.chat import chat_wrap

BUCKETS = (("0-4k", 4000), ("4-8k", 8000), ("8k+", None))


def truncate_middle(tokenizer: Tokenizer, text: str, budget: int) -> str:
    """``text`` with its middle cut so that it encodes to about ``budget`` tokens (first and last halves kept)."""
    ids = tokenizer.encode(text)
    if len(ids) <= budget:
        return text
    half = budget // 2
    return tokenizer.decode(ids[:half]) + tokenizer.decode(ids[len(ids) - half :])


def prompt_ids(
    spec: LongBenchDataset, record: Mapping[str, Any], tokenizer: Tokenizer, budget: int,
    chat_template: bool, prefix_ids: Sequence[int] = (),
) -> list[int]:
    """The ids fed to the model for one record."""
    text = truncate_middle(tokenizer, spec.prompt.format(context=record["context"], input=record["input"]), budget)
    if chat_template and spec.chat:
        return tokenizer.encode(chat_wrap(tokenizer, text, "eval.longbench.chat_template"))
    return list(prefix_ids) + tokenizer.encode(text)


def bucket_of(length: int) -> str:
    """LongBench-E's length bucket of a record."""
    return next(name for name, limit in BUCKETS if limit is None or length < limit)


@dataclass
class DatasetScore:
    """One dataset's score (0-100), its metric, record count, LongBench-E buckets, and the predictions."""

    dataset: str
    metric: str
    score: float
    n: int
    buckets: dict[str, float] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)


def score_dataset(spec: LongBenchDataset, records: Sequence[Mapping[str, Any]], predictions: Sequence[str], extended: bool = False) -> DatasetScore:
    """Score predictions of one dataset as LongBench's ``eval.py`` does (rounded to 2 decimals, x 100)."""
    scores = [score_record(spec.metric, p, r["answers"], r.get("all_classes"), spec.first_line) for p, r in zip(predictions, records, strict=True)]
    total = round(100 * sum(scores) / len(scores), 2) if scores else 0.0
    buckets: dict[str, float] = {}
    if extended:
        for name, _ in BUCKETS:
            inside = [s for s, r in zip(scores, records) if bucket_of(int(r["length"])) == name]
            if inside:
                buckets[name] = round(100 * sum(inside) / len(inside), 2)
    return DatasetScore(spec.name, spec.metric, total, len(scores), buckets,
                        [{"_id": r["_id"], "pred": p, "score": s} for r, p, s in zip(records, predictions, scores)])


@torch.no_grad()
def predict(
    model: nn.Module, tokenizer: Tokenizer, spec: LongBenchDataset, records: Sequence[Mapping[str, Any]],
    budget: int, chat_template: bool = False, prefix_ids: Sequence[int] = (),
) -> list[str]:
    """Greedy predictions of ``model`` for ``records`` of one dataset."""
    device = next(model.parameters()).device
    eos = getattr(tokenizer, "eos_token_id", None)
    stops = [eos] if eos is not None else []
    extra: dict[str, Any] = {}
    if spec.stops_at_newline:
        stops.append(tokenizer.encode("\n")[-1])
        extra["min_new_tokens"] = 1
    out_texts = []
    for record in records:
        ids = torch.tensor([prompt_ids(spec, record, tokenizer, budget, chat_template, prefix_ids)], device=device)
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=spec.max_new_tokens, do_sample=False,
            pad_token_id=eos, eos_token_id=stops or None, **extra,
        )
        new = out[0, ids.shape[1] :].tolist()
        cut = next((i for i, t in enumerate(new) if t in stops), len(new))
        out_texts.append(tokenizer.decode(new[:cut]))
    return out_texts


def longbench_eval(
    model: nn.Module, tokenizer: Tokenizer, files: Sequence[LongBenchFile], budget: int,
    chat_template: bool = False, prefix_ids: Sequence[int] = (), progress: bool = False,
) -> dict[str, Any]:
    """Predict and score every file; return the ``longbench`` entry of ``results.json``.

    ``budget``: the prompt's tokens (as LongBench's ``max_length``: the output comes on top).
    """
    was_training = model.training
    model.eval()
    results: dict[str, Any] = {}
    iterator = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc="longbench", leave=False)
    try:
        for file in iterator:
            spec = DATASETS[file.dataset]
            preds = predict(model, tokenizer, spec, file.records, budget, chat_template, prefix_ids)
            scored = score_dataset(spec, file.records, preds, file.extended)
            key = f"{file.dataset}_e" if file.extended else file.dataset
            results[key] = {"metric": scored.metric, "score": scored.score, "n": scored.n, "buckets": scored.buckets,
                            "max_new_tokens": spec.max_new_tokens, "chat_template": chat_template and spec.chat}
    finally:
        model.train(was_training)
    scores = [v["score"] for v in results.values()]
    return {"datasets": results, "average": round(sum(scores) / len(scores), 2) if scores else None,
            "max_length": int(budget)}


def format_longbench_table(longbench: Mapping[str, Any]) -> str:
    """Markdown: one row per dataset (metric, records, score, LongBench-E buckets), and the average."""
    lines = ["| dataset | metric | records | score | 0-4k | 4-8k | 8k+ |", "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in longbench["datasets"].items():
        buckets = [f"{r['buckets'][b]:.2f}" if b in r["buckets"] else "–" for b, _ in BUCKETS]
        lines.append(f"| {name} | {r['metric']} | {r['n']} | {r['score']:.2f} | " + " | ".join(buckets) + " |")
    average = longbench["average"]
    lines.append(f"| **average** | | | {'–' if average is None else f'{average:.2f}'} | | | |")
    return "\n".join(lines)


def run_longbench(
    model: nn.Module, tokenizer: Tokenizer, options: Any, lengths: Sequence[int], prefix_ids: Sequence[int], out_dir: str | Path
) -> TaskReport:
    """Run the ``eval.longbench`` options (dir, datasets, max_length, samples, chat_template) and report.

    ``max_length`` null: the longest of the evaluation ``lengths`` less the longest output any of
    the chosen datasets may generate, so prompt and answer fit in that length (LongBench itself
    leaves the room by hand: a 3500-token budget for a 4k model).
    """
    files = load_longbench(options.dir, options.datasets, options.samples)
    room = max((DATASETS[f.dataset].max_new_tokens for f in files), default=0)
    budget = int(options.max_length or max(1, max(lengths) - room))
    payload = longbench_eval(model, tokenizer, files, budget, options.chat_template, prefix_ids, progress=True)
    payload["dir"] = str(options.dir)
    metrics = {f"eval/longbench/{k}": v["score"] for k, v in payload["datasets"].items()}
    if payload["average"] is not None:
        metrics["eval/longbench"] = payload["average"]
    rows = [[k, v["metric"], v["n"], v["score"]] for k, v in payload["datasets"].items()]
    return TaskReport(
        key="longbench", payload=payload, title=f"LongBench (prompts cut in the middle to {budget} tokens)",
        table=format_longbench_table(payload), metrics=metrics,
        tables={"eval/longbench_table": (["dataset", "metric", "records", "score"], rows)},
    )
