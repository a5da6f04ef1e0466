"""Next-token loss computed in sequence chunks.

A [batch, length, vocab] float32 logits tensor is the largest activation of a
long-context step (32k tokens x 32k vocab x 4 bytes = 4 GiB per sequence).
Projecting and scoring one chunk of positions at a time, recomputing the
chunk's logits in the backward pass, keeps that peak bounded by the chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clexlab.arch import architecture_of


def project(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None = None) -> torch.Tensor:
    """float32 logits of ``hidden`` through the head (``softcap``: Gemma-2's ``c * tanh(logits / c)``)."""
    logits = F.linear(hidden, weight, bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _chunk_nll(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor, softcap: float | None = None
) -> torch.Tensor:
    logits = project(hidden, weight, bias, softcap)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")


def chunked_nll(
    hidden: torch.Tensor, lm_head: nn.Linear, labels: torch.Tensor, chunk_size: int = 1024, softcap: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood and the number of scored tokens.

    Args:
        hidden: final hidden states ``[batch, seq, hidden]`` (position i predicts ``labels[:, i]``).
        lm_head: the output projection.
        labels: target ids ``[batch, seq]``; ``-100`` is ignored.
        chunk_size: positions projected at a time.
        softcap: soft-cap of the logits (Gemma-2), None for none.

    Returns:
        ``(nll_sum, n_tokens)``: float32 scalar and int64 scalar tensors.
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    for start in range(0, hidden.shape[1], chunk_size):
        h = hidden[:, start : start + chunk_size]
        y = labels[:, start : start + chunk_size]
        if recompute:
            total = total + checkpoint(_chunk_nll, h, lm_head.weight, lm_head.bias, y, softcap, use_reentrant=False)
        else:
            total = total + _chunk_nll(h, lm_head.weight, lm_head.bias, y, softcap)
    return total, (labels != -100).sum()


def hidden_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The final hidden states ``[batch, seq, hidden]`` of a causal LM's backbone (no cache, no logits).

    An explicit all-ones attention mask is passed when none is given: with
    sampled (non-contiguous) positions and no mask, transformers may infer
    packed sequences from the position gaps and silently block attention.
    """
    if position_ids is None:
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand_as(input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    backbone = architecture_of(model).backbone(model)
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state


def logits_of(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """float32 logits of selected hidden states (e.g. a few answer positions), soft-capped as the model does."""
    arch = architecture_of(model)
    head = arch.lm_head(model)
    return project(hidden, head.weight, head.bias, arch.logit_softcap(model.config))


def causal_lm_nll(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a transformers causal LM backbone and score ``labels`` in chunks (see :func:`hidden_states`)."""
    arch = architecture_of(model)
    hidden = hidden_states(model, input_ids, position_ids)
    return chunked_nll(hidden, arch.lm_head(model), labels, chunk_size, arch.logit_softcap(model.config))
