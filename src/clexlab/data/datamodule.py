"""LightningDataModule: tokenized, cached, packed splits of a corpus."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from clexlab.data.corpus import Corpus
from clexlab.data.packing import PackedWindows
from clexlab.data.retrieval import RetrievalMix
from clexlab.data.sampler import ResumableDataLoader, ResumableSampler
from clexlab.data.tokenizer import Tokenizer
from clexlab.data.tokens import tokenize_split
from clexlab.utils.errors import UserError


def _count(key: str, value: object, minimum: int) -> int:
    """``value`` as an integer ``>= minimum``, or a one-line error naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


class LongContextDataModule(L.LightningDataModule):
    """Training windows of the model's train length, plus raw held-out streams for long-context eval.

    Args:
        corpus: the documents and their split.
        tokenizer: the model's tokenizer.
        seq_len: training length L.
        batch_size: micro-batch size per device.
        cache_dir: where tokenized splits are cached.
        num_workers: DataLoader workers.
        val_max_windows: cap on validation windows at length L (keeps validation fast).
        seed: shuffling seed.
        retrieval: synthetic retrieval documents mixed into the training windows (None: natural text only).
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Tokenizer,
        seq_len: int,
        batch_size: int,
        cache_dir: str | Path,
        num_workers: int = 0,
        val_max_windows: int | None = 64,
        seed: int = 0,
        retrieval: RetrievalMix | None = None,
    ) -> None:
        super().__init__()
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.seq_len = int(seq_len)
        # Checked here, where every caller (train.py, eval.py, tests) passes: PyTorch's DataLoader
        # would refuse a batch size of 0 only when the first batch is drawn, in a traceback.
        self.batch_size = _count("data.batch_size", batch_size, 1)
        self.cache_dir = Path(cache_dir)
        self.num_workers = _count("data.num_workers", num_workers, 0)
        self.val_max_windows = None if val_max_windows is None else _count("data.val_max_windows", val_max_windows, 1)
        self.seed = int(seed)
        self.retrieval = retrieval
        self._streams: dict[str, np.ndarray] = {}

    def stream(self, split: str) -> np.ndarray:
        """The whole token stream of ``split`` (tokenized on first use, cached)."""
        if split not in self._streams:
            self._streams[split] = tokenize_split(self.corpus, self.tokenizer, split, self.cache_dir)
        return self._streams[split]

    def prepare_data(self) -> None:
        # Runs on one process per node: fill the token cache before workers read it.
        for split in ("train", "val"):
            self.stream(split)

    def check_fits(self, needs: dict[str, tuple[int, str]] | None = None) -> None:
        """Fail in seconds, not after training, when a split is too short for what the run will do.

        Args:
            needs: ``{split: (tokens, what)}``: the evaluations' token needs
                (``what`` names the config keys that set them, for the message).

        Raises:
            UserError: naming the split, what it holds and what to change.
        """
        self._windows("train")
        self._windows("val", self.val_max_windows)
        if len(self._windows("train")) < self.batch_size:
            raise UserError(
                f"the train split has {len(self._windows('train'))} windows of model.train_length={self.seq_len}, "
                f"fewer than one batch of data.batch_size={self.batch_size}: use more data or a smaller batch"
            )
        for split, (tokens, what) in (needs or {}).items():
            have = len(self.stream(split))
            if have < tokens:
                raise UserError(
                    f"{what} needs {tokens} tokens of the {split} split, which has {have}: "
                    "lower the eval lengths or max_tokens, or use a larger corpus"
                )

    def _windows(self, split: str, max_windows: int | None = None) -> PackedWindows:
        windows = PackedWindows(self.stream(split), self.seq_len, max_windows)
        if len(windows) == 0:
            raise UserError(
                f"the {split} split has {len(self.stream(split))} tokens, fewer than one window of "
                f"model.train_length={self.seq_len}: use more data or a shorter train_length"
            )
        return windows

    def train_dataloader(self) -> DataLoader:
        # The order is a function of (seed, epoch) and the loader is stateful, so a
        # run resumed from a mid-epoch checkpoint continues with the very next batch.
        trainer = self.trainer
        windows = self._windows("train")
        if self.retrieval is not None:  # a seeded share of windows becomes retrieval documents (train only)
            windows = self.retrieval.wrap(windows, self.tokenizer, self.seed)
        sampler = ResumableSampler(
            len(windows),
            seed=self.seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )
        return ResumableDataLoader(
            windows,
            sampler=sampler,
            batch_size=self.batch_size,
            progress=self._batches_done if trainer is not None else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _batches_done(self) -> int:
        """Batches of the current epoch the fit loop has finished (what a resume must skip)."""
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._windows("val", self.val_max_windows),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )
