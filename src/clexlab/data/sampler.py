"""A shuffling sampler and DataLoader that resume mid-epoch exactly where a run stopped.

Lightning 2.6 saves a training DataLoader's position only when the loader is
*stateful* (has ``state_dict`` / ``load_state_dict``): ``FitLoop`` stores
``CombinedLoader._state_dicts()`` under ``loops.fit_loop.state_dict.combined_loader``
and hands them back through ``load_state_dict`` before the first batch of the
resumed run is drawn. A plain ``DataLoader(shuffle=True)`` is not stateful, so
a resumed run restarts the epoch from its first batch, with a new order.

Here the order of epoch ``e`` is a pure function of ``(seed, e)``, and the
position saved is the number of batches the fit loop has *finished* in the
epoch (its own progress counter), not the number the sampler has handed out:
Lightning prefetches one batch and DataLoader workers prefetch more, so
counting inside the sampler would skip batches that were never trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch ``epoch``: depends only on ``(seed, epoch)``."""
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1))
    return torch.randperm(num_samples, generator=generator)


class ResumableSampler(Sampler[int]):
    """Shuffle ``num_samples`` indices per epoch from ``(seed, epoch)``; shard them over ranks; skip on resume.

    Every rank computes the same permutation and takes every ``world_size``-th
    index from its ``rank``, truncated so all ranks get the same count (they
    must run the same number of steps). This replaces Lightning's
    ``DistributedSampler`` wrapping (the trainer runs with
    ``use_distributed_sampler=False``), which would hide this sampler's state.

    Args:
        num_samples: size of the dataset.
        seed: run seed.
        rank: this process's data-parallel rank.
        world_size: number of data-parallel ranks.
    """

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self._skip = 0  # samples of ``self.epoch`` already consumed before a resume

    def __len__(self) -> int:
        return self.num_samples // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start; a pending resume offset belongs to its own epoch only."""
        if int(epoch) != self.epoch:
            self.epoch, self._skip = int(epoch), 0

    def resume(self, epoch: int, samples_done: int) -> None:
        """The next iteration serves epoch ``epoch`` from its ``samples_done``-th sample (of this rank)."""
        self.epoch, self._skip = int(epoch), int(samples_done)

    def __iter__(self) -> Iterator[int]:
        order = epoch_permutation(self.num_samples, self.seed, self.epoch)
        mine = order[self.rank : len(self) * self.world_size : self.world_size]
        skip, self._skip = self._skip, 0  # one-shot: the following epochs start from their beginning
        yield from mine[skip:].tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` that Lightning treats as stateful.

    Args:
        dataset: the training windows.
        sampler: their order.
        batch_size: micro-batch size (the last incomplete batch is dropped).
        progress: returns how many batches of the current epoch the fit loop
            has finished; None outside a Trainer (the state then records 0).
        **kwargs: passed to :class:`torch.utils.data.DataLoader`.
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: ResumableSampler,
        batch_size: int,
        progress: Callable[[], int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        """Where the run is: the epoch, the batches it finished, and what the order depends on."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        return {
            "epoch": sampler.epoch,
            "batches_done": int(self.progress()) if self.progress is not None else 0,
            "batch_size": int(self.batch_size),
            "seed": sampler.seed,
            "num_samples": sampler.num_samples,
            "world_size": sampler.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch after its last finished batch.

        A checkpoint written after the last batch of an epoch resumes at the
        start of the next one, which is what Lightning's loop does too. If the
        data, the batch size or the number of ranks changed, the saved position
        means nothing here: a warning says so and the epoch restarts.
        """
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        same = (
            state.get("seed") == sampler.seed
            and state.get("num_samples") == sampler.num_samples
            and state.get("batch_size") == self.batch_size
            and state.get("world_size") == sampler.world_size
        )
        if not same:
            import warnings

            warnings.warn(
                "the checkpoint's data position does not fit this data (seed, size, batch size or number of "
                "devices changed): its epoch restarts from the first batch",
                stacklevel=2,
            )
            sampler.resume(int(state.get("epoch", 0)), 0)
            return
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self):
            epoch, done = epoch + 1, 0
        sampler.resume(epoch, done * self.batch_size)
