"""Lightning callback: held-out perplexity at several multiples of L during training."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from clexlab.evaluation import format_table, perplexity_at_lengths, resolve_lengths, sliding_window_perplexity
from clexlab.evaluation.perplexity import LengthResult
from clexlab.models.sharding import gathered_root, is_sharded
from clexlab.utils.errors import UserError

PROTOCOLS = ("chunks", "sliding")


class LongContextEval(L.Callback):
    """After each validation, score the same held-out targets at every length (chunks or sliding protocol).

    Logs ``val/ppl@<length>`` (so ModelCheckpoint can monitor ``val/ppl@L``)
    and, with W&B, a table of the results. Windows are split across ranks and
    the sums reduced, so multi-process runs agree with a single process (under
    FSDP the ranks run the same number of forwards, its all-gathers being collectives).

    Args:
        multiples: lengths as multiples of the model's train length.
        lengths: explicit lengths (override ``multiples``).
        split: data split to score.
        max_tokens: target tokens per length.
        batch_size: windows per forward.
        protocol: ``chunks`` (non-overlapping windows) or ``sliding`` (windows moved by ``stride``).
        stride: tokens a sliding window moves (clipped to the length).
    """

    def __init__(
        self,
        multiples: Sequence[float] = (1, 2, 4, 8),
        lengths: Sequence[int] | None = None,
        split: str = "val",
        max_tokens: int = 8192,
        batch_size: int = 4,
        protocol: str = "chunks",
        stride: int = 256,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise UserError(f"callbacks.long_context_eval.protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        if int(stride) <= 0:
            raise UserError(f"callbacks.long_context_eval.stride must be a positive number of tokens, got {stride}")
        self.protocol, self.stride = protocol, int(stride)
        self.multiples = list(multiples)
        self.lengths = list(lengths) if lengths else None
        self.split = split
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.last_results: dict[int, LengthResult] = {}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        train_length = pl_module.train_length
        lengths = resolve_lengths(train_length, self.multiples, self.lengths)
        # The windows are split across ranks and the sums reduced. Under FSDP every forward
        # is a collective (the layers are all-gathered), so the ranks also keep in lockstep:
        # the same number of forwards each, a rank short of windows repeating one.
        split = dict(rank=trainer.global_rank, world_size=trainer.world_size, lockstep=is_sharded(pl_module.model))
        stream = trainer.datamodule.stream(self.split)
        with gathered_root(pl_module.model):
            if self.protocol == "sliding":
                partial = sliding_window_perplexity(
                    pl_module.model, stream, lengths, self.stride, self.max_tokens, self.batch_size, **split
                )
            else:
                partial = perplexity_at_lengths(
                    pl_module.model, stream, lengths, self.max_tokens, self.batch_size, **split
                )
        results = {}
        for n, r in partial.items():
            sums = torch.tensor([r.nll_sum, float(r.tokens)], dtype=torch.float64, device=pl_module.device)
            sums = trainer.strategy.reduce(sums, reduce_op="sum")
            results[n] = LengthResult(n, float(sums[0]), int(sums[1]))
        self.last_results = results
        for n, r in results.items():
            pl_module.log(f"val/ppl@{n}", r.ppl, sync_dist=False, prog_bar=n == train_length)
        if trainer.is_global_zero:
            heading = f"\nstep {trainer.global_step}: held-out perplexity ({self.split}, {self.protocol})\n"
            print(heading + format_table(results, train_length))
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    rows = [[n, n / train_length, r.ppl] for n, r in sorted(results.items())]
                    logger.log_table("val/ppl_table", columns=["length", "multiple", "ppl"], data=rows)
