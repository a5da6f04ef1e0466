"""The shared shape of the retrieval callbacks: a small (length x depth) grid every N training steps."""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from clexlab.evaluation.perplexity import eval_mode
from clexlab.models.sharding import gathered_root, is_sharded


class GridEval(L.Callback, abc.ABC):
    """Score a grid of needle prompts during training and log one metric per length (plus a W&B table).

    Subclasses say what is scored (:meth:`score`) and how it is logged
    (:meth:`metrics` and :meth:`table`); this class owns when it runs and on
    which ranks. Rank 0 scores while the other ranks wait at a barrier, so DDP
    runs stay in step; under FSDP a rank cannot run a forward alone (the
    layers are all-gathered), so every rank scores the same prompts and only
    rank 0's loggers write.

    Args:
        every_n_steps: run after every N optimizer steps (0 disables the callback).
        lengths: prompt lengths in tokens (None: :attr:`default_multiples` x the train length).
        depths: key depths in ``[0, 1]``.
        samples: keys per cell.
        seed: seeds the keys (the same prompts every time, so runs are comparable).
    """

    name = "grid_eval"  # the barrier's name
    # The score reads the backbone and head directly (not through the root's forward), so under FSDP
    # the root's parameters (embeddings, norm, head) are gathered around it, as LongContextEval does.
    reads_root_directly = False
    default_multiples: tuple[int, ...] = (1, 2, 4)

    def __init__(
        self,
        every_n_steps: int = 0,
        lengths: Sequence[int] | None = None,
        depths: Sequence[float] = (0.0, 0.5, 1.0),
        samples: int = 2,
        seed: int = 0,
    ) -> None:
        self.every_n_steps = int(every_n_steps)
        self.lengths = list(lengths) if lengths else None
        self.depths = list(depths)
        self.samples = int(samples)
        self.seed = int(seed)
        self.last_result: Any = None
        self._last_step = -1

    @abc.abstractmethod
    def score(self, model: torch.nn.Module, tokenizer: Any, lengths: list[int], prefix_ids: list[int]) -> Any:
        """The grid's result for ``model`` (called in eval mode under ``torch.no_grad``)."""

    @abc.abstractmethod
    def metrics(self, result: Any) -> dict[str, float | None]:
        """``{metric name: value}`` to log for ``result`` (None values are left out)."""

    @abc.abstractmethod
    def table(self, result: Any) -> tuple[str, list[str], list[list[Any]]]:
        """``(key, columns, rows)`` of the W&B table for ``result``."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        # With gradient accumulation several micro-batches end at one global step: run once.
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        if trainer.is_global_zero or is_sharded(pl_module.model):
            self._run(trainer, pl_module)
        trainer.strategy.barrier(self.name)

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lengths = self.lengths or [m * pl_module.train_length for m in self.default_multiples]
        tokenizer = trainer.datamodule.tokenizer
        gather = gathered_root(pl_module.model) if self.reads_root_directly else contextlib.nullcontext()
        with gather, eval_mode(pl_module.model), torch.no_grad():
            result = self.score(pl_module.model, tokenizer, lengths, list(getattr(tokenizer, "bos_prefix", [])))
        self.last_result = result
        metrics = {k: v for k, v in self.metrics(result).items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                key, columns, rows = self.table(result)
                logger.log_table(key, columns=columns, data=rows)
