"""Chunked prefill through a cache: how perplexity is scored under a KV policy.

A window is fed ``chunk_size`` tokens at a time through one transformers
``DynamicCache``, so each chunk's queries attend per the policy to what the
cache holds. After each chunk the keys the policy can never use again are
evicted (StreamingLLM and LM-Infinite keep only their sinks/globals and window:
cache memory grows with the budget, not the window). The hidden states of the
chunks are scored like the full-attention path, the logits projected in chunks.

When the policy's budget covers the whole window, the window is today's single
forward (:func:`clexlab.models.loss.causal_lm_nll`): full attention, exactly.

CLEX models: their backbone hook (:mod:`clexlab.rope.generation`) adopts the
cache and, when a chunk moves the scale ``t = ceil(length / L)``, empties it
and refills it with the whole history in one forward. A chunk is therefore
computed at the scale of the tokens processed so far, as CLEX generates; the
refill's many queries go through the policy block by block (see
:mod:`clexlab.evaluation.kv_policies.attention`).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import DynamicCache

from clexlab.arch import architecture_of
from clexlab.evaluation.kv_policies.attention import PolicyRun
from clexlab.models.loss import causal_lm_nll, chunked_nll
from clexlab.rope.generation import cache_argument


def policy_hidden_states(model: nn.Module, input_ids: torch.Tensor, run: PolicyRun) -> torch.Tensor:
    """Final hidden states ``[batch, n, hidden]`` of ``input_ids`` (positions ``0..n-1``) under ``run``'s policy.

    Args:
        model: a causal LM inside :func:`~clexlab.evaluation.kv_policies.use_kv_policy`.
        input_ids: ``[batch, n]`` windows of one length (no padding).
        run: the active policy run.
    """
    backbone = architecture_of(model).backbone(model)
    argument = cache_argument(backbone)
    cache = DynamicCache()  # no config: plain layers, none that drops keys on its own
    run.reset()
    batch, n = input_ids.shape
    step = run.policy.chunk_size
    outputs = []
    for start in range(0, n, step):
        ids = input_ids[:, start : start + step]
        positions = torch.arange(start, start + ids.shape[1], device=ids.device).unsqueeze(0).expand(batch, -1)
        out = backbone(input_ids=ids, position_ids=positions, use_cache=True, **{argument: cache})
        # A CLEX refill returns the hidden states of the whole history: keep this chunk's.
        outputs.append(out.last_hidden_state[:, -ids.shape[1] :])
        returned = getattr(out, "cache", None)
        if returned is None:
            returned = getattr(out, "past_key_values", None)
        cache = returned if returned is not None else cache  # CLEX's hook may stand in its own cache
        if start + step < n:
            run.evict(cache, start + step)
    return torch.cat(outputs, dim=1)


def policy_nll(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    run: PolicyRun | None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and scored-token count of ``labels``, under ``run``'s policy (None: full attention).

    Args:
        model: a causal LM.
        input_ids: ``[batch, n]`` windows.
        labels: ``[batch, n]`` targets, ``-100`` ignored.
        run: the active policy run, or None for today's path.
        chunk_size: positions projected to the vocabulary at a time.
    """
    if run is None or run.policy.covers(input_ids.shape[1]):
        return causal_lm_nll(model, input_ids, labels, chunk_size=chunk_size)
    arch = architecture_of(model)
    hidden = policy_hidden_states(model, input_ids, run)
    return chunked_nll(hidden, arch.lm_head(model), labels, chunk_size, arch.logit_softcap(model.config))
