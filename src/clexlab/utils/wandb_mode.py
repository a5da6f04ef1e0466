"""Choose the W&B mode so a run never prompts for a login or hangs."""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def wandb_api_key_configured() -> bool:
    """True when W&B has a key: ``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not path.is_file():
        return False
    try:
        hosts = netrc.netrc(str(path)).hosts
    except (netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_offline() -> bool:
    """Offline unless a key is configured; ``WANDB_MODE=offline|disabled`` always wins."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    return not wandb_api_key_configured()
