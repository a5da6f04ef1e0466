"""Carry the random number generators' states through checkpoints.

Lightning 2.6 saves model, optimizer, scheduler and loop state, but not the
global RNGs. clexlab's own randomness does not depend on them (the curriculum
draws from ``(seed, global_step)``, the data order from ``(seed, epoch)``, and
the tiny models have no dropout), but anything else that draws from torch,
numpy or ``random`` during training — dropout in a real model, a user's
callback — would continue differently after a resume. This callback makes a
resumed run continue those streams too.

States are stored as tensors and lists of ints so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's, torch's CPU and (when present) CUDA generators."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStateCheckpoint(L.Callback):
    """Save the global RNG states in each checkpoint; restore them when training resumes.

    Restoring waits for ``on_train_start``: between loading the checkpoint and
    the first resumed step, Lightning builds dataloaders and moves the model,
    and those must not shift the restored streams.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_rng_state(self._pending)
            self._pending = None
