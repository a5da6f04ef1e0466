"""Lightning callback: the teacher-forced needle score every N training steps."""

from __future__ import annotations

from typing import Any

import torch

from clexlab.callbacks.grid_eval import GridEval
from clexlab.evaluation.needle import NeedleResult, needle_nll


class NeedleEval(GridEval):
    """Run :func:`clexlab.evaluation.needle.needle_nll` during training: one forward per prompt, no generation.

    Logs ``val/needle_nll@<length>`` (the key's NLL in nats, mean over depths
    and keys) and ``val/needle_digit_acc@<length>`` (share of key digits the
    model ranks first given the true digits before them); with W&B also the
    table. Where greedy passkey accuracy stays at 0 until retrieval suddenly
    works, these move smoothly. The options are
    :class:`~clexlab.callbacks.grid_eval.GridEval`'s (``seed`` is the passkey
    task's, so both score the same needles); ``lengths=None`` means 1, 2 and
    4 x the train length.
    """

    name = "needle_eval"
    default_multiples = (1, 2, 4)
    reads_root_directly = True  # one forward of the backbone, the head on the answer's positions only

    def score(self, model: torch.nn.Module, tokenizer: Any, lengths: list[int], prefix_ids: list[int]) -> NeedleResult:
        """The teacher-forced grid (see :func:`clexlab.evaluation.needle.needle_nll`)."""
        return needle_nll(model, tokenizer, lengths, self.depths, n_samples=self.samples, seed=self.seed, prefix_ids=prefix_ids)

    def metrics(self, result: NeedleResult) -> dict[str, float | None]:
        """``val/needle_nll@<length>`` and ``val/needle_digit_acc@<length>``."""
        payload = result.to_dict()
        metrics = {f"val/needle_nll@{n}": v for n, v in payload["nll"].items()}
        metrics.update({f"val/needle_digit_acc@{n}": v for n, v in payload["digit_accuracy"].items()})
        return metrics

    def table(self, result: NeedleResult) -> tuple[str, list[str], list[list[Any]]]:
        """One row per length: the key's NLL and its digit accuracy."""
        payload = result.to_dict()
        rows = [[n, payload["nll"][str(n)], payload["digit_accuracy"][str(n)]] for n in result.lengths]
        return "val/needle_table", ["length", "key_nll", "digit_accuracy"], rows
