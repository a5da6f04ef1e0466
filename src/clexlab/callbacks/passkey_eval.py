"""Lightning callback: a small passkey-retrieval grid every N training steps."""

from __future__ import annotations

from typing import Any

import torch

from clexlab.callbacks.grid_eval import GridEval
from clexlab.evaluation.passkey import PasskeyResult, passkey_retrieval


class PasskeyEval(GridEval):
    """Run :func:`clexlab.evaluation.passkey_retrieval` beside perplexity during training.

    Logs ``val/passkey@<length>`` (accuracy averaged over depths) and, with
    W&B, the grid as a table. The options and the ranks that generate are
    :class:`~clexlab.callbacks.grid_eval.GridEval`'s; ``lengths=None`` means
    2, 4 and 8 x the train length.
    """

    name = "passkey_eval"
    default_multiples = (2, 4, 8)

    def score(self, model: torch.nn.Module, tokenizer: Any, lengths: list[int], prefix_ids: list[int]) -> PasskeyResult:
        """The greedy passkey grid (see :func:`clexlab.evaluation.passkey_retrieval`)."""
        return passkey_retrieval(
            model, tokenizer, lengths, self.depths, n_samples=self.samples, seed=self.seed, prefix_ids=prefix_ids
        )

    def metrics(self, result: PasskeyResult) -> dict[str, float | None]:
        """``val/passkey@<length>``: accuracy averaged over depths."""
        return {f"val/passkey@{n}": result.mean_accuracy(n) for n in result.lengths}

    def table(self, result: PasskeyResult) -> tuple[str, list[str], list[list[Any]]]:
        """One row per length, one column per depth."""
        rows = [[n, *row] for n, row in zip(result.lengths, result.accuracy)]
        return "val/passkey_table", ["length", *map(str, result.depths)], rows
