"""Rotary application with one angle gradient per layer, for CLEX training.

Why: plain RoPE's cos/sin are constants, so autograd never differentiates
``q * cos + rotate_half(q) * sin`` with respect to them. Under CLEX they depend
on the ODE weights, and autograd then sends every layer's gradient back
through cos *and* sin separately: four extra products of the size of q/k
(in whatever strided layout SDPA hands back), four reductions over the heads,
and the backward of ``rotate_half`` for each. On the default tiny model that
was most of the CLEX step overhead (BENCHMARKS.md).

The gradient needed is smaller than that. With ``o = R(theta) q`` (the rotated
query, an output the attention keeps anyway) and ``g = dL/do``,
``dL/dtheta_j = sum_{batch, heads} (g . rotate_half(o))_j + (...)_{j + d/2}``:
one product and one reduction per tensor, straight to the ``[., n, d/2]``
angles. :class:`RotaryAngleGrad` computes that in its backward.

How it plugs in: :class:`~clexlab.rope.clex.CLEXRotaryEmbedding` returns
cos/sin computed from *detached* angles and tags them with the angles tensor
(:func:`tag_angles`); :func:`patch_rotary_application` replaces the attention
module's ``apply_rotary_pos_emb`` with :func:`apply_rotary_pos_emb`, which
takes the fused path for tagged cos and calls transformers' own function for
everything else (plain RoPE, other models, no grad). If a layer ever got a
copy of the tables instead (no tag), the ODE would get no gradient from it:
the rotary module checks at its next training forward that the tagged angles
were consumed, and raises otherwise. The library path stays the reference:
``tests/rope/test_fused_rotary.py`` holds the two together.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import torch
from torch import nn

_ANGLES_ATTR = "_clex_angles"
_CONSUMED_ATTR = "_clex_consumed"
_ORIGINAL_ATTR = "_clex_original"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[-x2, x1]`` for ``x = [x1, x2]`` split at half the last dimension (as in transformers)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _angle_grad(grad: torch.Tensor, rotated: torch.Tensor, keep_batch: bool) -> torch.Tensor:
    """``sum (grad . rotate_half(rotated))`` over heads (and batch), folded to ``d/2``.

    Accumulated in at least float32: under bf16 autocast the sum runs over
    batch x heads terms that bf16 could not add up faithfully.
    """
    dtype = torch.promote_types(grad.dtype, torch.float32)
    # The product inherits SDPA's [batch, seq, heads, d] memory order; reducing over batch
    # and heads in that order was ~5x slower on CPU than copying to [b, h, n, d] first.
    full = (grad * rotate_half(rotated)).contiguous().sum(dim=1 if keep_batch else (0, 1), dtype=dtype)
    half = full.shape[-1] // 2
    folded = full[..., :half] + full[..., half:]
    return folded if keep_batch else folded.unsqueeze(0)


class RotaryAngleGrad(torch.autograd.Function):
    """``(q, k) -> (R q, R k)`` with ``R`` from ``(cos, sin)``; gradients to q, k and the angles.

    ``cos``/``sin`` (``[b, n, d]``, b = 1 or batch, no grad) must be
    ``cos(cat(angles, angles)) * s`` and ``sin(...) * s`` for the ``angles``
    (``[b, n, d/2]``) given, for any constant ``s`` (the rope's attention scaling):
    ``d(s R q)/d theta = rotate_half(s R q)`` already carries it.
    """

    @staticmethod
    def forward(ctx, q, k, cos, sin, angles):  # noqa: D102
        setattr(angles, _CONSUMED_ATTR, True)
        cos_, sin_ = cos.unsqueeze(1), sin.unsqueeze(1)
        q_out = q * cos_ + rotate_half(q) * sin_
        k_out = k * cos_ + rotate_half(k) * sin_
        # q_out/k_out are the attention's own inputs, which it saves anyway: no extra memory.
        ctx.save_for_backward(cos_, sin_, q_out, k_out)
        ctx.keep_batch = angles.shape[0] != 1
        ctx.angles_dtype = angles.dtype
        return q_out, k_out

    @staticmethod
    def backward(ctx, grad_q, grad_k):  # noqa: D102
        cos_, sin_, q_out, k_out = ctx.saved_tensors
        # R^T g = g cos - rotate_half(g sin): rotate_half's transpose is its negative.
        grad_q_in = grad_k_in = grad_angles = None
        if ctx.needs_input_grad[0]:
            grad_q_in = grad_q * cos_ - rotate_half(grad_q * sin_)
        if ctx.needs_input_grad[1]:
            grad_k_in = grad_k * cos_ - rotate_half(grad_k * sin_)
        if ctx.needs_input_grad[4]:
            grad_angles = _angle_grad(grad_q, q_out, ctx.keep_batch) + _angle_grad(grad_k, k_out, ctx.keep_batch)
            grad_angles = grad_angles.to(ctx.angles_dtype)
        return grad_q_in, grad_k_in, None, None, grad_angles


def tag_angles(cos: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Mark ``cos`` as computed from ``angles`` (requires grad) so the patched application differentiates them."""
    setattr(cos, _ANGLES_ATTR, angles)
    return cos


def angles_consumed(angles: torch.Tensor) -> bool:
    """True once a :class:`RotaryAngleGrad` took ``angles`` (the tag reached an attention layer)."""
    return bool(getattr(angles, _CONSUMED_ATTR, False))


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1, *, _original: Callable | None = None):
    """transformers' ``apply_rotary_pos_emb``, with the fused angle gradient for CLEX-tagged cos/sin."""
    angles = getattr(cos, _ANGLES_ATTR, None)
    if angles is not None and unsqueeze_dim == 1 and torch.is_grad_enabled():
        width = cos.shape[-1]
        if width == q.shape[-1]:
            return RotaryAngleGrad.apply(q, k, cos, sin, angles)
        # Partial rotary (GPT-NeoX, Phi-3 style: the function gets whole heads and rotates the
        # first ``width`` dimensions): as transformers' own function does, rotate those, pass the rest.
        q_rot, k_rot = RotaryAngleGrad.apply(q[..., :width], k[..., :width], cos, sin, angles)
        return torch.cat([q_rot, q[..., width:]], dim=-1), torch.cat([k_rot, k[..., width:]], dim=-1)
    if _original is None:
        raise RuntimeError("apply_rotary_pos_emb: untagged cos/sin need the model's original function")
    return _original(q, k, cos, sin, unsqueeze_dim)


def _calls_global(cls: type, name: str) -> bool:
    """Whether ``cls.forward`` looks ``name`` up as a global of its module (undecorated code)."""
    forward = inspect.unwrap(cls.forward)
    code = getattr(forward, "__code__", None)
    return code is not None and name in code.co_names and forward.__globals__ is vars(sys.modules[cls.__module__])


def patch_rotary_application(model: nn.Module) -> bool:
    """Route the attention modules' ``apply_rotary_pos_emb`` through :func:`apply_rotary_pos_emb`.

    transformers' attention classes call a module-level ``apply_rotary_pos_emb``
    of their own modeling file (Llama, Mistral, Qwen2, GPT-NeoX, Phi, ...): that
    global is replaced by a wrapper that behaves exactly like the original for
    untagged cos/sin, so other models in the process are unaffected. Idempotent.

    Guarded against library drift: the global is only replaced where the
    attention's ``forward`` really looks it up by that name; otherwise this
    returns False and CLEX differentiates cos/sin with plain autograd (always
    correct). Should a future attention class stop calling the global after
    this check, the rotary module notices at its next training forward (the
    tagged angles were never consumed) and raises instead of training the ODE
    without a gradient.

    Returns:
        True when every attention module of ``model`` now uses the fused path;
        False when some attention class has no such global (then CLEX keeps
        plain autograd through cos/sin, which is always correct).
    """
    from clexlab.arch import architecture_of

    if getattr(model, "config", None) is None:
        return False  # not a transformers model: nothing to route
    classes = {type(m) for m in architecture_of(model).attention_modules(model)}
    if not classes or not all(_calls_global(cls, "apply_rotary_pos_emb") for cls in classes):
        return False
    for module_name in {cls.__module__ for cls in classes}:
        modeling = sys.modules[module_name]
        current = getattr(modeling, "apply_rotary_pos_emb", None)
        if current is None:
            return False
        if getattr(current, _ORIGINAL_ATTR, None) is not None:
            continue  # patched before

        def patched(q, k, cos, sin, unsqueeze_dim=1, _original=current):
            return apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim, _original=_original)

        setattr(patched, _ORIGINAL_ATTR, current)
        patched.__doc__ = apply_rotary_pos_emb.__doc__
        modeling.apply_rotary_pos_emb = patched
    return True
