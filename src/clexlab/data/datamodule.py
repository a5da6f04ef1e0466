"""LightningDataModule: tokenized, cached, packed splits of a corpus."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from clexlab.data.corpus import Corpus
from clexlab.data.packing import PackedWindows
from clexlab.data.tokenizer import Tokenizer
from clexlab.data.tokens import tokenize_split
from clexlab.utils.errors import UserError


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
    ) -> None:
        super().__init__()
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir)
        self.num_workers = int(num_workers)
        self.val_max_windows = val_max_windows
        self.seed = int(seed)
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

    def _windows(self, split: str, max_windows: int | None = None) -> PackedWindows:
        windows = PackedWindows(self.stream(split), self.seq_len, max_windows)
        if len(windows) == 0:
            raise UserError(
                f"the {split} split has {len(self.stream(split))} tokens, fewer than one window of "
                f"model.train_length={self.seq_len}: use more data or a shorter train_length"
            )
        return windows

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self._windows("train"),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._windows("val", self.val_max_windows),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )
