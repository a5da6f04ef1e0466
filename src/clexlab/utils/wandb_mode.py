"""Choose the W&B mode so a run never prompts for a login or hangs."""

from __future__ import annotations

import functools
import logging
import netrc
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("clexlab")

DEFAULT_HOST = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0


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


@functools.lru_cache(maxsize=8)
def wandb_host_reachable(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the W&B server opens within ``timeout`` seconds.

    The name lookup runs in a daemon thread, because ``socket`` timeouts do not
    cover DNS and a cluster node without network can block there for minutes.
    """
    url = urlparse(base_url if "://" in base_url else f"https://{base_url}")
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def wandb_offline() -> bool:
    """Offline unless a key is configured and the server answers; ``WANDB_MODE=offline|disabled`` always wins.

    A key with no network (a compute node behind a firewall) used to leave the
    run waiting for ``wandb.init`` to time out; now it logs offline, with a
    warning saying how to upload later.
    """
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return True
    if not wandb_api_key_configured():
        return True
    base_url = os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST
    if not wandb_host_reachable(base_url):
        _warn_unreachable(base_url)
        return True
    return False


@functools.lru_cache(maxsize=None)
def _warn_unreachable(base_url: str) -> None:
    # Once per process: the resolver runs each time the logger config is resolved.
    log.warning(
        "a W&B API key is set but %s cannot be reached: logging offline (upload later with `wandb sync <run>/wandb`)",
        base_url,
    )
