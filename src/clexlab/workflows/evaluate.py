"""The evaluation workflow behind ``python eval.py``: perplexity, passkey, report and figures.

What is evaluated is one of

* ``ckpt_path=``: a clexlab checkpoint (model, rope and data settings reused);
* ``model.path=``: a local Hugging Face directory — any RoPE causal LM (its own
  ``rope_parameters`` honoured), or a released CLEX model, loaded into
  clexlab's CLEX module without remote code (:mod:`clexlab.models.official_clex`).

The run directory receives ``results.json``, ``results.md`` (the perplexity
table), ``report.md`` (every table and figure) and the figures
``ppl_vs_length.png``, ``passkey_heatmap.png`` and, for CLEX models,
``clex_frequencies.png``; configured loggers get the metrics, tables and images.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from clexlab.data.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer
from clexlab.evaluation import (
    format_passkey_table,
    format_report,
    format_table,
    passkey_retrieval,
    perplexity_at_lengths,
    plot_clex_frequencies,
    plot_passkey_heatmap,
    plot_ppl_vs_length,
    resolve_lengths,
    results_payload,
    sliding_window_perplexity,
    write_json,
)
from clexlab.evaluation.kv_policies import make_policy, use_kv_policy
from clexlab.evaluation.passkey import mean_or_none
from clexlab.models import LongContextLM
from clexlab.rope import CLEXRotaryEmbedding, find_rotary
from clexlab.utils.checks import preflight_eval
from clexlab.utils.errors import UserError
from clexlab.workflows.common import instantiate_all, tokenizer_for

log = logging.getLogger("clexlab")
STDLIB_DATA = Path(__file__).resolve().parents[3] / "conf" / "data" / "stdlib.yaml"


@dataclass
class Subject:
    """What is evaluated: the model, its tokenizer, its train length, its default data, facts for results.json."""

    model: nn.Module
    tokenizer: Tokenizer
    train_length: int
    data: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)
    prefix_ids: list[int] = field(default_factory=list)


def load_checkpoint(path: str) -> tuple[LongContextLM, dict[str, Any]]:
    """Rebuild the module from a clexlab checkpoint (weights only; no pickled code runs)."""
    import inspect

    from clexlab.utils.checkpoint_io import load_checkpoint_file

    ckpt = load_checkpoint_file(path)  # weights_only; a damaged file is one line
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict) or "state_dict" not in ckpt:
        raise UserError(f"ckpt_path={path} was not written by clexlab train.py (no model hyper-parameters or weights)")
    try:
        inspect.signature(LongContextLM).bind(**hparams, load_weights=False)
    except TypeError as err:
        raise UserError(f"ckpt_path={path} was written by another clexlab version ({err}): evaluate it with that version") from err
    module = LongContextLM(**hparams, load_weights=False)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:  # wrong shapes or keys; a state_dict that is no dict
        raise UserError(f"ckpt_path={path} does not match the model it describes: {str(err).splitlines()[0]}") from err
    return module, ckpt


def rope_name(hparams: dict[str, Any]) -> str:
    """The RoPE method of a checkpoint (its ``rope`` hyper-parameter is a name or a config node)."""
    rope = hparams.get("rope")
    return str(rope.get("name") if isinstance(rope, dict) else rope)


def subject_from_checkpoint(path: str) -> Subject:
    """A clexlab checkpoint: its model, tokenizer, train length and data settings."""
    module, ckpt = load_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    extra = {
        "rope": rope_name(hparams),
        "method": getattr(module, "method", None),
        "model": hparams["model"].get("name"),
        "checkpoint": str(path),
        "global_step": int(ckpt.get("global_step", 0)),
    }
    return Subject(module.model, tokenizer_for(hparams["model"]), module.train_length, hparams.get("data"), extra)


def train_length_of(config: dict[str, Any]) -> int:
    """L of a Hugging Face config: ``original_max_position_embeddings`` of its rope params, else ``max_position_embeddings``."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    length = params.get("original_max_position_embeddings") or config.get("max_position_embeddings")
    if not length:
        raise UserError("the model config has no max_position_embeddings: set model.train_length=...")
    return int(length)


def subject_from_directory(model_cfg: dict[str, Any]) -> Subject:
    """A local Hugging Face directory, plain or in the released CLEX format."""
    from clexlab.models.builder import load_pretrained
    from clexlab.models.official_clex import is_official_clex, load_official_clex, read_config

    path = str(Path(model_cfg["path"]).expanduser())
    raw = read_config(path)
    extra: dict[str, Any] = {"model": Path(path).name, "model_path": path}
    if is_official_clex(raw):
        model, info = load_official_clex(
            path, model_cfg.get("dtype", "float32"), model_cfg.get("attn_implementation", "sdpa"),
            model_cfg.get("clex_solver", "fast"), model_cfg.get("train_length"),
        )
        train_length = info["train_length"]
        extra.update(rope="clex", format="clex-release", max_scale=info["max_scale"], log_scale=info["log_scale"])
    else:
        model = load_pretrained({**model_cfg, "path": path}).eval()
        train_length = int(model_cfg.get("train_length") or train_length_of(raw))
        params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        extra.update(rope=params.get("rope_type") or params.get("type") or "default", format="hf")
    kind = model_cfg.get("tokenizer") or "auto"
    if kind == "auto":
        kind = "bytes" if raw.get("clexlab_tokenizer") == "bytes" else "hf"
    tokenizer = ByteTokenizer() if kind == "bytes" else HFTokenizer(path)
    return Subject(model, tokenizer, train_length, None, extra, list(getattr(tokenizer, "bos_prefix", [])))


def datamodule_for(cfg: DictConfig, subject: Subject):
    """The held-out data: ``data=...`` if given, else the checkpoint's own, else ``conf/data/stdlib.yaml``."""
    if cfg.get("data"):
        data_cfg = OmegaConf.to_container(cfg.data, resolve=False)
    elif subject.data:
        data_cfg = dict(subject.data)
    elif STDLIB_DATA.is_file():
        data_cfg = OmegaConf.to_container(OmegaConf.load(STDLIB_DATA), resolve=False)
    else:  # an installed package without the repository's conf/: the same corpus, stated here
        data_cfg = {"_target_": "clexlab.data.datamodule.LongContextDataModule", "batch_size": 1,
                    "corpus": {"_target_": "clexlab.data.corpus.StdlibCorpus"}}
    # The node's interpolations (${model.train_length}, ...) point into the train config: fill them here.
    data_cfg.update(seq_len=subject.train_length, seed=int(cfg.seed), cache_dir=str(cfg.paths.cache_dir))
    return instantiate(OmegaConf.create(data_cfg), tokenizer=subject.tokenizer, _recursive_=True)


def _log_everything(loggers, payload: dict[str, Any], images: dict[str, Path], split: str, reports=()) -> None:
    train_length = payload["train_length"]
    metrics = {f"{split}/ppl@{n}": v for n, v in payload.get("ppl", {}).items()}
    passkey = payload.get("passkey")
    if passkey:
        means = {n: mean_or_none(row) for n, row in zip(passkey["lengths"], passkey["accuracy"])}
        metrics.update({f"eval/passkey@{n}": v for n, v in means.items() if v is not None})
    for report in reports:
        metrics.update(report.metrics)
    for logger in loggers:
        logger.log_metrics(metrics)
        if hasattr(logger, "log_table"):
            if payload.get("ppl"):
                rows = [[int(n), int(n) / train_length, v] for n, v in payload["ppl"].items()]
                logger.log_table(f"{split}/ppl_table", columns=["length", "multiple", "ppl"], data=rows)
            if passkey:
                columns = ["length", *[f"depth {d:g}" for d in passkey["depths"]]]
                rows = [[n, *row] for n, row in zip(passkey["lengths"], passkey["accuracy"])]
                logger.log_table("eval/passkey_table", columns=columns, data=rows)
            for report in reports:
                for name, (columns, rows) in report.tables.items():
                    logger.log_table(name, columns=columns, data=rows)
        if hasattr(logger, "log_image"):
            for name, path in images.items():
                logger.log_image(f"eval/{name}", images=[str(path)])
        logger.finalize("success")


def run_suite(subject: Subject, eval_cfg: Any, cfg: DictConfig, loggers=(), datamodule=None) -> dict[str, Any]:
    """Run the configured tasks on ``subject``; write results, report and figures to the run directory.

    ``datamodule``: the data already built (train.py's final evaluation); else built by
    :func:`datamodule_for`. The loggers are finalized at the end.

    Returns:
        The ``results.json`` payload.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, train_length = subject.model, subject.train_length
    lengths = resolve_lengths(train_length, eval_cfg.multiples, eval_cfg.lengths)
    rope = find_rotary(model)
    clex = rope if isinstance(rope, CLEXRotaryEmbedding) else None
    max_scale = clex.max_scale if clex is not None else None
    images: dict[str, Path] = {}
    results: dict = {}
    extra = dict(subject.extra, tasks=list(eval_cfg.tasks), split=eval_cfg.split, protocol=eval_cfg.protocol)
    if eval_cfg.protocol == "sliding":
        extra["stride"] = int(eval_cfg.stride)
    if clex is not None:
        extra.setdefault("max_scale", clex.max_scale)
    kv_policy = make_policy(eval_cfg.kv_policy, asdict(eval_cfg.kv), train_length)  # None: full attention
    if kv_policy is not None:
        extra["kv_policy"] = kv_policy.describe()

    held_out = [datamodule]  # built on first use: the ppl stream, RULER's essay haystack

    def data():
        if held_out[0] is None:
            held_out[0] = datamodule_for(cfg, subject)
        return held_out[0]

    if "ppl" in eval_cfg.tasks:
        stream = data().stream(eval_cfg.split)
        if eval_cfg.protocol == "sliding":
            results = sliding_window_perplexity(
                model, stream, lengths, eval_cfg.stride, eval_cfg.max_tokens, eval_cfg.batch_size, progress=True,
                kv_policy=kv_policy,
            )
        else:
            results = perplexity_at_lengths(
                model, stream, lengths, eval_cfg.max_tokens, eval_cfg.batch_size, progress=True, kv_policy=kv_policy
            )
        table = format_table(results, train_length)
        policy = f", {kv_policy.describe()}" if kv_policy is not None else ""
        print(f"\nHeld-out perplexity ({eval_cfg.split} split, {eval_cfg.protocol}{policy}, {results[lengths[0]].tokens} target tokens per length)")
        print(table)
        (out / "results.md").write_text(table + "\n")
    if "passkey" in eval_cfg.tasks:
        pk = eval_cfg.passkey
        grid = passkey_retrieval(
            model, subject.tokenizer, pk.lengths or lengths, pk.depths, pk.samples, int(cfg.seed),
            pk.max_new_tokens, subject.prefix_ids, progress=True, kv_policy=kv_policy,
        )
        extra["passkey"] = grid.to_dict()
        print(f"\nPasskey retrieval ({pk.samples} keys per cell)\n" + format_passkey_table(extra["passkey"]))
    with use_kv_policy(model, kv_policy):  # the generation tasks run under the policy too
        reports = _task_reports(subject, eval_cfg, int(cfg.seed), lengths, out, data)
    for report in reports:
        extra[report.key] = report.payload
        images.update(report.images)
        print(f"\n{report.title}\n{report.table}")
    payload = results_payload(results, train_length, **extra)
    write_json(out / "results.json", payload)

    if results:
        label = f"{eval_cfg.protocol}" + (f", stride {eval_cfg.stride}" if eval_cfg.protocol == "sliding" else "")
        plot_ppl_vs_length(payload["ppl"], train_length, out / "ppl_vs_length.png", max_scale, label=label)
        images["ppl_vs_length"] = out / "ppl_vs_length.png"
    if "passkey" in payload:
        plot_passkey_heatmap(payload["passkey"], out / "passkey_heatmap.png")
        images["passkey_heatmap"] = out / "passkey_heatmap.png"
    if clex is not None:
        plot_clex_frequencies(clex, out / "clex_frequencies.png")
        images["clex_frequencies"] = out / "clex_frequencies.png"
    (out / "report.md").write_text(format_report(payload, {k: p.name for k, p in images.items()}, reports))
    _log_everything(loggers, payload, images, eval_cfg.split, reports)
    print(f"results: {out / 'results.json'}; report: {out / 'report.md'}")
    return payload


def _task_reports(subject: Subject, eval_cfg: Any, seed: int, lengths: list[int], out: Path, data) -> list:
    """RULER, needle_nll and LongBench, each run when ``eval.tasks`` names it (see their modules)."""
    model, tok, prefix = subject.model, subject.tokenizer, subject.prefix_ids
    reports = []
    if "ruler" in eval_cfg.tasks:
        from clexlab.evaluation.ruler import essay_words, run_ruler

        longest = max(eval_cfg.ruler.lengths or lengths)
        # Held-out words for the essay haystack: one word per token of the longest prompt is plenty.
        essay = lambda: essay_words(data().corpus.documents(eval_cfg.split), longest + 1000)  # noqa: E731
        reports.append(run_ruler(model, tok, eval_cfg.ruler, lengths, seed, essay, prefix, out))
    if "needle_nll" in eval_cfg.tasks:
        from clexlab.evaluation.needle import run_needle

        reports.append(run_needle(model, tok, eval_cfg.needle_nll, lengths, seed, prefix, out))
    if "longbench" in eval_cfg.tasks:
        from clexlab.evaluation.longbench import run_longbench

        reports.append(run_longbench(model, tok, eval_cfg.longbench, lengths, prefix, out))
    return reports


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint or a Hugging Face directory; write results, report and figures to the run directory."""
    eval_cfg = preflight_eval(cfg)
    if cfg.get("ckpt_path"):
        subject = subject_from_checkpoint(str(cfg.ckpt_path))
    else:
        subject = subject_from_directory(OmegaConf.to_container(cfg.model, resolve=True))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    subject.model = subject.model.to(device).eval()
    return run_suite(subject, eval_cfg, cfg, instantiate_all(cfg.get("logger")))
