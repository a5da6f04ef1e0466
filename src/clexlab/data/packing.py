"""Fixed-length windows over a token stream."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class PackedWindows(Dataset):
    """Non-overlapping training windows of ``seq_len`` inputs and ``seq_len`` next-token labels.

    Window ``i`` reads tokens ``[i*n, i*n + n + 1)``: inputs are the first n,
    labels the last n, so consecutive windows share one boundary token and
    every token of the stream is a target exactly once.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> None:
        self.tokens = tokens
        self.seq_len = int(seq_len)
        count = (len(tokens) - 1) // self.seq_len
        self.count = count if max_windows is None else min(count, int(max_windows))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        start = i * self.seq_len
        chunk = torch.from_numpy(np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64))
        return {"input_ids": chunk[:-1], "labels": chunk[1:]}
