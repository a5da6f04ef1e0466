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


def _chunk_nll(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")


def chunked_nll(
    hidden: torch.Tensor, lm_head: nn.Linear, labels: torch.Tensor, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood and the number of scored tokens.

    Args:
        hidden: final hidden states ``[batch, seq, hidden]`` (position i predicts ``labels[:, i]``).
        lm_head: the output projection.
        labels: target ids ``[batch, seq]``; ``-100`` is ignored.
        chunk_size: positions projected at a time.

    Returns:
        ``(nll_sum, n_tokens)``: float32 scalar and int64 scalar tensors.
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    for start in range(0, hidden.shape[1], chunk_size):
        h = hidden[:, start : start + chunk_size]
        y = labels[:, start : start + chunk_size]
        if recompute:
            total = total + checkpoint(_chunk_nll, h, lm_head.weight, lm_head.bias, y, use_reentrant=False)
        else:
            total = total + _chunk_nll(h, lm_head.weight, lm_head.bias, y)
    return total, (labels != -100).sum()


def causal_lm_nll(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a transformers causal LM backbone and score ``labels`` in chunks.

    An explicit all-ones attention mask is always passed: with sampled
    (non-contiguous) positions and no mask, transformers may infer packed
    sequences from the position gaps and silently block attention.
    """
    if position_ids is None:
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand_as(input_ids)
    attention_mask = torch.ones_like(input_ids)
    out = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return chunked_nll(out.last_hidden_state, model.lm_head, labels, chunk_size)
