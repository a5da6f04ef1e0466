"""Move RoPE-rotated heads to other positions: rotate by the position difference.

transformers caches keys after RoPE, each at its original position ``p``. A
policy that gives a key the position ``p'`` rotates it by ``p' - p`` with the
frequencies of the forward (RoPE rotations compose: ``R(a) R(b) = R(a + b)``).
The rotation is pure, so a RoPE attention scaling folded into cos/sin (YaRN's
``mscale``) stays as it was. Convention: transformers' ``rotate_half``, the
first ``2 * len(inv_freq)`` dimensions of a head rotate (pairing ``i`` with
``i + len(inv_freq)``) and the rest pass unchanged (partial rotary: Phi, GPT-NeoX).
"""

from __future__ import annotations

import torch


class Rotary:
    """Rotations with one forward's inverse frequencies.

    Args:
        inv_freq: float32 ``[rotary_dim / 2]`` (see :func:`clexlab.rope.frequencies.inv_freq_for`).
    """

    def __init__(self, inv_freq: torch.Tensor) -> None:
        self.inv_freq = inv_freq.float()
        self.half = int(inv_freq.numel())

    def rotate(self, x: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
        """``x`` rotated by ``delta`` positions.

        Args:
            x: ``[..., n, head_dim]`` heads (queries or keys).
            delta: position shifts broadcastable to ``x.shape[:-1]`` (e.g. ``[n]``, ``[b, 1, n]``) or a number.

        Returns:
            A tensor like ``x``: the rotated dimensions computed in float32, cast back to ``x.dtype``.
        """
        delta = torch.as_tensor(delta, device=x.device)
        angles = delta.to(torch.float32).unsqueeze(-1) * self.inv_freq.to(x.device)
        cos, sin = angles.cos(), angles.sin()
        dims, half = 2 * self.half, self.half
        src = x if x.dtype == torch.float32 else x.float()
        x1, x2 = src[..., :half], src[..., half:dims]
        # Written into one output, four passes and no temporaries the size of x (decode steps
        # rotate a few thousand keys each, so this is on the hot path).
        out = torch.empty(src.shape, dtype=torch.float32, device=x.device)
        first, second = out[..., :half], out[..., half:dims]
        torch.mul(x1, cos, out=first)
        first.addcmul_(x2, sin, value=-1)
        torch.mul(x2, cos, out=second)
        second.addcmul_(x1, sin)
        if dims < x.shape[-1]:
            out[..., dims:] = src[..., dims:]
        return out if x.dtype == torch.float32 else out.to(x.dtype)
