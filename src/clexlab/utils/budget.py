"""Valid but absurd sizes: refuse (or warn about) a run that would take hours or more memory than the machine has.

Every value may be in range and the run still hopeless: ``clex.max_scale=100000``
keeps the ODE solver busy for a long time before the first step prints
anything, and a model or batch larger than the machine's memory is killed by
the kernel after minutes of setup. Both are estimated from the config alone.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from omegaconf import DictConfig, open_dict

from clexlab.utils.errors import UserError

log = logging.getLogger("clexlab")

WARN_SECONDS = 60.0  # a setup step this long gets a warning with the estimate
REFUSE_SECONDS = 3600.0  # and one this long is refused
GIB = 1024**3


def check_setup_cost(method: Any) -> None:
    """Warn about, or refuse, a RoPE method whose frequencies take too long to prepare (e.g. a huge t_max)."""
    seconds, what = method.setup_cost()
    if seconds > REFUSE_SECONDS:
        raise UserError(
            f"{what}: solving the frequencies up to t_max takes about {seconds / 3600:.1f} h on a CPU "
            "(and a training step at a large t solves that span again): lower the max scale or use a faster solver"
        )
    if seconds > WARN_SECONDS:
        log.warning("%s: solving the frequencies up to t_max takes about %.0f min on a CPU", what, seconds / 60)


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_cpu_memory(cfg: DictConfig, processes: int) -> None:
    """Refuse a CPU training run whose step needs more memory than the machine has.

    The estimate is the dry run's plan (weights, gradients, AdamW state and
    activations of one step at ``model.train_length x data.batch_size``), times
    the processes on this machine.
    """
    from clexlab.workflows.dry_run import build_plan

    total = machine_memory()
    if not total:
        return
    planned = copy.deepcopy(cfg)
    with open_dict(planned):  # the plan of this machine's processes (trainer.devices may say auto)
        planned.trainer.devices, planned.trainer.num_nodes = max(processes, 1), 1
    plan, _ = build_plan(planned)
    need = plan.total * max(processes, 1)
    if need > total:
        raise UserError(
            f"one training step needs about {need / GIB:.1f} GiB ({processes} process(es); see "
            f"python train.py ... dry_run=true), this machine has {total / GIB:.1f} GiB: lower data.batch_size, "
            "model.train_length or the model's sizes, or train on GPUs"
        )
    if need > 0.8 * total:
        log.warning("one training step needs about %.1f GiB of this machine's %.1f GiB", need / GIB, total / GIB)
