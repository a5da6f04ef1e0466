"""Hydra callbacks: summarize a multirun when it ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("clexlab")


#: Where the summary goes when the sweep directory already holds a summary.md (or .json, .png) clexlab did not write.
FALLBACK = "clexlab-summary"


def _write_without_replacing(sweep_dir: Path, runs: list[dict[str, Any]]) -> dict[str, Path] | None:
    """The summary in ``sweep_dir``, or in ``sweep_dir/clexlab-summary`` when a file there is not clexlab's.

    Never replaces a file the user wrote (see :mod:`clexlab.summarize`); the
    runs are done at this point, so a conflict is a warning, not an error.
    """
    from clexlab.summarize import write_summary
    from clexlab.utils.errors import UserError

    for out in (sweep_dir, sweep_dir / FALLBACK):
        try:
            return write_summary(out, runs)
        except UserError as err:
            log.warning("%s", err)
    log.warning("no summary written; rebuild it with: python -m clexlab.summarize %s --out <new directory>", sweep_dir)
    return None


class SummarizeMultirun(Callback):
    """After ``python train.py -m ...``, write summary.md/json and ppl_vs_length.png into the sweep dir.

    With W&B as the logger, the summary table and plot are also logged, as a
    ``summary`` run in the sweep's group.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from clexlab.summarize import find_results, summarize

        from clexlab.utils.errors import UserError

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = find_results([sweep_dir]) if sweep_dir.exists() else []
        except UserError as err:  # a damaged results.json: the runs are done, say so and stop
            log.warning("%s; no summary written", err)
            return
        if not runs:
            log.warning("no results.json under %s: nothing to summarize", sweep_dir)
            return
        files = _write_without_replacing(sweep_dir, runs)
        if files is None:
            return
        print(files["md"].read_text())
        print(f"summary: {files['md']}, {files['json']}, {files['png']}")
        wandb_cfg = (config.get("logger") or {}).get("wandb")
        if wandb_cfg:
            self._log_to_wandb(wandb_cfg, str(sweep_dir), summarize(runs), files["png"])

    @staticmethod
    def _log_to_wandb(wandb_cfg: DictConfig, group: str, summary: dict[str, Any], png: Path) -> None:
        import wandb

        from clexlab.utils.wandb_mode import wandb_offline

        run = wandb.init(
            project=wandb_cfg.get("project", "clexlab"),
            group=group,
            job_type="summary",
            name="summary",
            dir=group,
            mode="offline" if wandb_offline() else "online",
        )
        columns = ["method", "runs", *[str(n) for n in summary["lengths"]]]
        rows = []
        for method, info in summary["methods"].items():
            cells = [info["lengths"].get(str(n), {}).get("ppl", {}).get("mean") for n in summary["lengths"]]
            rows.append([method, len(info["runs"]), *cells])
        run.log({"summary/ppl": wandb.Table(columns=columns, data=rows), "summary/ppl_vs_length": wandb.Image(str(png))})
        run.finish()
