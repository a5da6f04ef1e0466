"""The rotary frequencies a model uses, whatever its RoPE method and family.

Code that moves keys to other positions after the fact (the evaluation-time
KV policies re-rotate cached keys to compact positions) needs the inverse
frequencies of the forward that produced them. Every rotary module clexlab
installs answers :meth:`inv_freq_for_length`; a model's own transformers
module keeps them in its ``inv_freq`` buffer (dynamic and longrope types update
it during their forward, so it then holds those of the last forward).

Convention (transformers'): the first ``2 * len(inv_freq)`` dimensions of each
head are rotated, pairing dimension ``i`` with ``i + len(inv_freq)``
(``rotate_half``); the rest (partial rotary: Phi, GPT-NeoX) pass unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from clexlab.arch import architecture_of


def inv_freq_for(model: nn.Module, seq_len: int) -> torch.Tensor:
    """float32 inverse frequencies ``[rotary_dim / 2]`` of a forward over positions ``0..seq_len-1``.

    Args:
        model: a transformers causal LM (any RoPE method installed, or its own).
        seq_len: one more than the largest position of the forward (CLEX picks its scale from it).
    """
    rotary = architecture_of(model).rotary(model)
    method = getattr(rotary, "inv_freq_for_length", None)
    if method is not None:
        return method(int(seq_len)).float()
    return rotary.inv_freq.float()
