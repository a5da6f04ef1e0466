"""Multi-process runs inside a Hydra job: what Lightning's launcher needs, and what it leaves behind.

Lightning starts ranks 1..N-1 of a single-node run (``trainer.devices=N``
with DDP or FSDP) by re-running the command line: ``sys.argv`` plus
``hydra.run.dir=<the run directory>``. In a multirun (``python train.py -m
seed=0,1 trainer=ddp``) that command line still holds ``-m`` and the whole
sweep, so every job's rank 1 would start the sweep again, and ``hydra.run.dir``
is not where the job writes (a multirun job writes to its sweep subdirectory).
:func:`distributed_job` makes the re-run command the job's own single run.

Hydra's basic launcher runs the jobs of a sweep one after the other in one
process, so the rank-0 process also has to leave no trace of one job's
process group or launcher environment (``LOCAL_RANK`` in the environment
tells the next job's Lightning that processes are created externally, and it
would wait for ranks that never come).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# Set by Lightning's subprocess launcher for the job's ranks; restored after each job.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Hydra's command-line flags that are not overrides but choose the config; kept for the ranks.
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _hydra_config():
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get() if HydraConfig.initialized() else None
    except (ImportError, ValueError):
        return None


def in_multirun() -> bool:
    """True inside a job of ``python train.py -m ...``."""
    from hydra.types import RunMode

    hydra_cfg = _hydra_config()
    return hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN


def config_flags(argv: list[str]) -> list[str]:
    """The ``--config-name``/``--config-path``/``--config-dir`` flags of a command line, with their values."""
    kept: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name in CONFIG_FLAGS:
            if "=" in arg:
                kept.append(arg)
            else:
                kept.extend(argv[i : i + 2])
                i += 1
        i += 1
    return kept


def single_run_argv(argv: list[str], task_overrides: list[str]) -> list[str]:
    """The command line that runs one job of a sweep on its own: its overrides, no ``-m``.

    Args:
        argv: the process's ``sys.argv`` (the sweep's command line).
        task_overrides: the job's own overrides (``hydra.overrides.task``:
            the swept values already chosen, e.g. ``seed=1``).
    """
    # hydra.mode=RUN: a config that sets hydra.mode=MULTIRUN itself must not sweep again either.
    return [argv[0], *config_flags(argv[1:]), *task_overrides, "hydra.mode=RUN"]


@contextlib.contextmanager
def distributed_job() -> Iterator[None]:
    """Wrap one training job so Lightning's rank processes run this job only, and clean up after it.

    In a multirun job, ``sys.argv`` becomes the job's own command line and
    Hydra's ``run.dir`` the job's output directory for the duration of the
    block (both are read by Lightning's launcher when it starts the ranks).
    Always: the launcher's environment variables are restored and the process
    group is destroyed on exit, so a next job in this process starts clean.
    """
    saved_env = {key: os.environ.get(key) for key in LAUNCH_ENV}
    saved_argv = list(sys.argv)
    hydra_cfg = _hydra_config()
    saved_run_dir = None
    if hydra_cfg is not None and in_multirun():
        from omegaconf import open_dict, read_write

        sys.argv = single_run_argv(saved_argv, list(hydra_cfg.overrides.task))
        saved_run_dir = hydra_cfg.run.dir
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_run_dir is not None:
            from omegaconf import open_dict, read_write

            with read_write(hydra_cfg), open_dict(hydra_cfg):
                hydra_cfg.run.dir = saved_run_dir
        destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def destroy_process_group() -> None:
    """Tear down the default process group if one is up (a no-op otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
