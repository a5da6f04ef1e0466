"""Hydra callbacks: summarize a multirun when it ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("clexlab")


class SummarizeMultirun(Callback):
    """After ``python train.py -m ...``, write summary.md/json and ppl_vs_length.png into the sweep dir.

    With W&B as the logger, the summary table and plot are also logged, as a
    ``summary`` run in the sweep's group.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from clexlab.summarize import find_results, summarize, write_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        runs = find_results([sweep_dir]) if sweep_dir.exists() else []
        if not runs:
            log.warning("no results.json under %s: nothing to summarize", sweep_dir)
            return
        files = write_summary(sweep_dir, runs)
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
