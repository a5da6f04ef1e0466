"""Stop (or skip the step) when the loss or a gradient is NaN/Inf, before the weights are touched.

A diverged step is caught at two points of Lightning's automatic optimization,
both before ``optimizer.step()``:

- ``on_before_backward``: the loss itself;
- ``on_before_optimizer_step``: the gradients (a finite loss can still give
  an overflowing gradient).

By default training stops with one line naming the step; since the weights
were never updated with the bad step, ``last.ckpt`` stays the last good state
(and :meth:`NonFiniteGuard.on_save_checkpoint` refuses to write non-finite
weights at all, whatever produced them). With ``skip=True``
(``train.skip_nonfinite=true``) the gradients are dropped instead: AdamW leaves
every parameter whose ``grad`` is None untouched, moments included, so the step
is a no-op except that the step counter and the LR schedule advance. Skips are
counted in ``train/skipped_nonfinite``.

With several processes every decision is taken by all ranks together (a NaN
on any rank stops or skips the step everywhere): the losses of DDP ranks
differ, and under FSDP each rank sees only its shard of the gradients, so a
rank deciding alone would leave the others waiting in a collective.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from clexlab.models.sharding import local_part
from clexlab.utils.errors import UserError

HINT = "lower optim.lr, keep trainer.gradient_clip_val, check the data, or set train.skip_nonfinite=true to skip such steps"


class NonFiniteError(UserError):
    """Training met a NaN/Inf loss or gradient and was told to stop."""


def _grads(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    # A sharded (FSDP2) gradient is checked through this rank's shard; the decision is reduced over ranks.
    return [local_part(p.grad) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def _on_any_rank(trainer: L.Trainer, flag: bool) -> bool:
    """``flag`` OR-ed over all ranks (every rank must call it at the same point)."""
    if trainer.world_size <= 1:
        return flag
    return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))


def grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    """True when every gradient of ``optimizer`` is finite (one device sync for all of them)."""
    grads = _grads(optimizer)
    if not grads:
        return True
    # The total norm is finite iff every element is: one reduction instead of one check per tensor.
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack([n.to(norms[0].device) for n in norms]).sum()))


class NonFiniteGuard(L.Callback):
    """Never apply a step whose loss or gradients are not finite.

    Args:
        skip: drop such steps and go on (counted) instead of stopping.
        max_skips: stop anyway after this many skipped steps in a row (a run
            that only produces NaN is not training); None for no limit.
    """

    def __init__(self, skip: bool = False, max_skips: int | None = 100) -> None:
        self.skip = bool(skip)
        self.max_skips = max_skips
        self.skipped = 0  # steps skipped in this run (logged)
        self._in_a_row = 0
        self._bad: str | None = None  # why the current step is bad

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))

    def _stop(self, trainer: L.Trainer, what: str) -> None:
        ckpt = ""
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "last_model_path", ""):
                ckpt = f"; last good checkpoint: {cb.last_model_path}"
                break
        raise NonFiniteError(f"{what} at step {trainer.global_step}: training stopped{ckpt}; {HINT}")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._bad = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = float(loss.detach())
        if _on_any_rank(trainer, not math.isfinite(value)):
            self._bad = f"non-finite loss ({value})" if not math.isfinite(value) else "non-finite loss (on another rank)"
            if not self.skip:
                self._stop(trainer, self._bad)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        # Runs after backward and before gradient clipping and optimizer.step().
        if self._bad is None and _on_any_rank(trainer, not grads_finite(optimizer)):
            self._bad = "non-finite gradient"
            if not self.skip:
                self._stop(trainer, self._bad)
        if self._bad is None:
            self._in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)  # AdamW skips parameters without a gradient
        self.skipped += 1
        self._in_a_row += 1
        if self.max_skips is not None and self._in_a_row > self.max_skips:
            self._stop(trainer, f"{self._in_a_row} steps in a row with a {self._bad}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.skip:
            pl_module.log("train/skipped_nonfinite", float(self.skipped), on_step=True, on_epoch=False)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Last line of defence: whatever happened, never replace a good checkpoint with NaN weights.
        for name, tensor in checkpoint.get("state_dict", {}).items():
            if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteError(
                    f"the weights hold NaN/Inf ({name}) at step {trainer.global_step}: checkpoint not written, "
                    f"the previous one is kept; {HINT}"
                )
