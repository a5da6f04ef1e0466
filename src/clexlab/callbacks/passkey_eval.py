"""Lightning callback: a small passkey-retrieval grid every N training steps."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from clexlab.evaluation.passkey import PasskeyResult, passkey_retrieval
from clexlab.evaluation.perplexity import eval_mode
from clexlab.models.sharding import is_sharded


class PasskeyEval(L.Callback):
    """Run :func:`clexlab.evaluation.passkey_retrieval` beside perplexity during training.

    Logs ``val/passkey@<length>`` (accuracy averaged over depths) and, with
    W&B, the grid as a table. Generation runs on rank 0 only; the other ranks
    wait at a barrier, so DDP runs stay in step (under FSDP all ranks generate).

    Args:
        every_n_steps: run after every N optimizer steps (0 disables the callback).
        lengths: prompt lengths in tokens (None: 2, 4 and 8 x the train length).
        depths: key depths in ``[0, 1]``.
        samples: keys per cell.
        seed: seeds the keys (the same prompts every time, so runs are comparable).
    """

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
        self.last_result: PasskeyResult | None = None
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        # With gradient accumulation several micro-batches end at one global step: run once.
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        # Under FSDP rank 0 cannot run a forward alone (the layers are all-gathered):
        # every rank generates the same prompts; only rank 0's loggers write.
        if trainer.is_global_zero or is_sharded(pl_module.model):
            self._run(trainer, pl_module)
        trainer.strategy.barrier("passkey_eval")

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L_train = pl_module.train_length
        lengths = self.lengths or [2 * L_train, 4 * L_train, 8 * L_train]
        tokenizer = trainer.datamodule.tokenizer
        with eval_mode(pl_module.model), torch.no_grad():
            result = passkey_retrieval(
                pl_module.model,
                tokenizer,
                lengths,
                self.depths,
                n_samples=self.samples,
                seed=self.seed,
                prefix_ids=list(getattr(tokenizer, "bos_prefix", [])),
            )
        self.last_result = result
        metrics = {f"val/passkey@{n}": result.mean_accuracy(n) for n in result.lengths}
        metrics = {k: v for k, v in metrics.items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            if isinstance(logger, WandbLogger):
                rows = [[n, *row] for n, row in zip(result.lengths, result.accuracy)]
                logger.log_table("val/passkey_table", columns=["length", *map(str, result.depths)], data=rows)
