"""OmegaConf resolvers used by conf/ (registered on import)."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from clexlab.utils.wandb_mode import wandb_offline


def auto_precision() -> str:
    """``bf16-mixed`` where a CUDA GPU supports bf16, otherwise full float32."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def wandb_group() -> str | None:
    """The sweep directory when Hydra runs a multirun (groups its runs in W&B), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        return str(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    except (ValueError, AttributeError):  # outside a Hydra app (tests composing configs)
        return None


def register_resolvers() -> None:
    """Register ``${auto_precision:}``, ``${wandb_offline:}`` and ``${wandb_group:}`` once."""
    for name, fn in (("auto_precision", auto_precision), ("wandb_offline", wandb_offline), ("wandb_group", wandb_group)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
