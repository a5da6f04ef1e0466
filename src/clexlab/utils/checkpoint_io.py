"""Checkpoint files that are whole or absent, loaded without unpickling code.

Lightning's ``TorchCheckpointIO`` serialises the checkpoint into memory and then
opens the target for writing: a run killed during that write leaves a
truncated ``last.ckpt`` behind, and the only resume point is gone.
:class:`AtomicCheckpointIO` writes a temporary file next to the target,
flushes it to disk and renames it over the target (``os.replace`` is atomic on
POSIX file systems), so readers see the old file or the new one, never half.

Loading always uses ``torch.load(weights_only=True)``: Lightning 2.6 passes
``weights_only=None`` by default, which torch >= 2.6 treats as True but older
torch versions treat as False (full unpickling of a file someone gave you).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from clexlab.utils.errors import UserError, torch_load_errors


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename.

    Raises:
        UserError: when the disk is full or the directory is not writable; the
            previous file at ``path``, if any, is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint gets the usual permissions
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = f"the previous {path.name} is intact" if path.exists() else "no checkpoint was written"
            raise UserError(f"disk full while saving {path} ({err.strerror}): free space there and resume; {kept}") from err
        if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise UserError(f"cannot write checkpoint {path} ({err.strerror}): check paths.output_dir") from err
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself; not every file system lets a directory be opened.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint_file(path: str | Path, key: str = "ckpt_path", map_location: Any = "cpu", mmap: bool = False) -> dict:
    """Read a checkpoint with ``weights_only=True``, or raise a one-line :class:`UserError`.

    Args:
        path: the ``.ckpt`` file.
        key: the config key that named it, for the message.
        map_location: as for :func:`torch.load`.
        mmap: memory-map the tensors instead of reading them (a cheap look at a big file).
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError as err:
        raise UserError(f"{key}={path} does not exist") from err
    except torch_load_errors() as err:  # what torch raises for damaged or foreign files
        detail = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""
        raise UserError(
            f"{key}={path} is not a readable checkpoint (truncated, damaged or not written by torch.save: "
            f"{type(err).__name__}{': ' + detail[:160] if detail else ''}); pick another file, e.g. an earlier run's last.ckpt"
        ) from err
    if not isinstance(ckpt, dict):
        raise UserError(f"{key}={path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__})")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """The Trainer's checkpoint I/O: atomic writes, ``weights_only`` reads, one-line errors.

    Passed to the Trainer as a plugin (``trainer.plugins`` in
    ``conf/trainer/default.yaml``); every ``ModelCheckpoint`` and
    ``trainer.save_checkpoint`` write goes through it, and so does the read of
    ``trainer.fit(ckpt_path=...)``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is forced: a checkpoint is data, never code (see the module docstring).
        return load_checkpoint_file(path, map_location=map_location if map_location is not None else "cpu")
