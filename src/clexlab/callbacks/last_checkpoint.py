"""``checkpoints/last.ckpt``: the resume point, kept current however a run ends.

A stock ``ModelCheckpoint(every_n_train_steps=N)`` stops saving at validation
and at the end of training (it sets ``every_n_epochs=0``), so the best-by-metric
checkpoint and the periodic one must be two callbacks. This one only keeps
``last.ckpt``: every ``every_n_train_steps`` optimizer steps, after each
validation, at the end of training, and when the run is asked to stop.

Stopping: the first Ctrl-C (SIGINT) or a SIGTERM (what SLURM and Kubernetes
send before pre-empting) sets a flag; at the end of the current step the
checkpoint is saved and the trainer stops, so the saved state is exactly
resumable. A second Ctrl-C interrupts at once (Lightning's own handling);
``last.ckpt`` then holds the state of the last periodic save.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

STOP_SIGNALS = ("SIGINT", "SIGTERM")


class LastCheckpoint(ModelCheckpoint):
    """Save ``<dirpath>/last.ckpt`` every N steps, after validation, at the end and on a stop signal.

    Args:
        dirpath: the run's checkpoint directory.
        every_n_train_steps: optimizer steps between saves (0: only at
            validation, at the end and on a stop signal).
        handle_signals: catch SIGINT/SIGTERM to stop cleanly after the current step.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 100, handle_signals: bool = True) -> None:
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=max(int(every_n_train_steps), 0) or None,
            enable_version_counter=False,  # always last.ckpt, even when the directory holds one
        )
        self.handle_signals = handle_signals
        self.stop_signal: int | None = None  # the signal that stopped the run, once it has
        self._requested: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def state_key(self) -> str:
        # Stable across changes of every_n_train_steps, so a resumed run with another
        # interval still restores this callback's state instead of warning.
        return "LastCheckpoint"

    def _save_last_now(self, trainer: L.Trainer, agree: bool = True) -> None:
        saved = self._last_global_step_saved == trainer.global_step and Path(self.last_model_path or "").is_file()
        if agree and trainer.world_size > 1:
            # Saving is collective: follow rank 0, which wrote the file (other nodes may not see it).
            saved = trainer.strategy.broadcast(saved)
        if saved:
            return  # saved at this very step already (periodic save, then validation)
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # -- when to save -------------------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # Every rank must agree to stop at the same step, or DDP collectives hang.
        if trainer.strategy.reduce_boolean_decision(self._requested is not None, all=False):
            self._save_last_now(trainer)
            trainer.should_stop = True
            self.stop_signal = self._requested or signal.SIGTERM  # another rank got it: treat as pre-emption

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit" and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # an epoch boundary means nothing in step-based training; the end of fit is handled below

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:
            self._save_last_now(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # Lightning raises SIGTERMException between steps, when the state is whole: save it.
        # Any other exception may come from the middle of a step: keep the last good file.
        if isinstance(exception, SIGTERMException) and trainer.global_step > 0:
            self._save_last_now(trainer, agree=False)  # no collective: not every rank need be here

    # -- signals --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._requested is not None and signum == signal.SIGINT:
            # Second Ctrl-C: the user wants out now. Lightning turns this into a clean exit.
            raise KeyboardInterrupt
        self._requested = signum
        print(
            f"\n{name} received: finishing the current step, saving last.ckpt, then stopping"
            + (" (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""),
            file=sys.stderr,
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_fit_start: Lightning 2.6 installs its own SIGTERM handler after that hook
        # (SignalConnector.register_signal_handlers in Trainer._run), which would then end the
        # run with exit status 0 and, with several ranks, broadcast from inside the handler
        # (ranks signalled one at a time hang). Installed here, ours is the one that runs.
        super().on_train_start(trainer, pl_module)
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        for name in STOP_SIGNALS:
            signum = getattr(signal, name)
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
