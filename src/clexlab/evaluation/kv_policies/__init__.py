"""Training-free long context: evaluation-time KV policies (``eval.kv_policy``).

* ``full``: today's attention (no policy object, nothing registered);
* ``streaming``: StreamingLLM, attention sinks plus a recent window (:mod:`.streaming`);
* ``lm_infinite``: LM-Infinite, a Λ-shaped mask and a distance ceiling (:mod:`.lm_infinite`);
* ``tokenselect``: TokenSelect, per-head soft-voted top-k keys with a Selection Cache (:mod:`.tokenselect`).

Use :func:`make_policy` to build one from ``eval.kv`` options, :func:`use_kv_policy`
to run a model under it (``forward`` and ``generate``), :func:`policy_nll` to score
windows by chunked prefill. Pure torch and transformers (no Lightning, Hydra, W&B).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clexlab.evaluation.kv_policies.attention import PolicyRun, use_kv_policy
from clexlab.evaluation.kv_policies.base import KVPolicy, check_options
from clexlab.evaluation.kv_policies.runner import policy_hidden_states, policy_nll
from clexlab.utils.errors import UserError

FULL = "full"


def _classes() -> dict[str, type[KVPolicy]]:
    from clexlab.evaluation.kv_policies.lm_infinite import LMInfinitePolicy
    from clexlab.evaluation.kv_policies.streaming import StreamingPolicy
    from clexlab.evaluation.kv_policies.tokenselect import TokenSelectPolicy

    return {cls.name: cls for cls in (StreamingPolicy, LMInfinitePolicy, TokenSelectPolicy)}


def policy_names() -> list[str]:
    """Every value ``eval.kv_policy`` accepts."""
    return [FULL, *_classes()]


def policy_class(name: str) -> type[KVPolicy]:
    """The class of a policy name, or a one-line :class:`UserError` listing the names."""
    cls = _classes().get(name)
    if cls is None:
        raise UserError(f"eval.kv_policy must be one of {policy_names()}, got {name!r}")
    return cls


def check_policy(name: str, options: Mapping[str, Any]) -> None:
    """Check ``eval.kv_policy`` and the ``eval.kv`` options that are set (config time, before L is known)."""
    given = {k: v for k, v in options.items() if v is not None}
    if name == FULL:
        if given:
            key = next(iter(given))
            raise UserError(
                f"eval.kv.{key} does not apply to kv_policy=full (set eval.kv_policy=streaming|lm_infinite|tokenselect)"
            )
        return
    check_options(name, given)


def make_policy(
    name: str, options: Mapping[str, Any] | None = None, train_length: int | None = None
) -> KVPolicy | None:
    """The policy ``name`` with ``options`` (unset ones: its defaults, some derived from ``train_length``).

    Returns:
        None for ``full`` (today's code path), else the policy.

    Raises:
        UserError: unknown name, an option the policy does not take, a bad value.
    """
    options = dict(options or {})
    check_policy(name, options)
    if name == FULL:
        return None
    return policy_class(name).from_options(options, train_length)


__all__ = [
    "FULL",
    "KVPolicy",
    "PolicyRun",
    "check_policy",
    "make_policy",
    "policy_class",
    "policy_hidden_states",
    "policy_names",
    "policy_nll",
    "use_kv_policy",
]
