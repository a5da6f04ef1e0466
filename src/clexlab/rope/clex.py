"""CLEX rotary embedding: a drop-in replacement for a model's shared rotary module.

transformers' decoder models call ``rotary_emb(hidden_states, position_ids)``
once per forward and hand ``(cos, sin)`` to every layer, so replacing that one
module gives every layer CLEX frequencies. At t = 1 they are the model's own
(its :class:`~clexlab.rope.own.OwnRope`: plain, ``llama3``, ``yarn``, ...
frequencies and attention scaling, over its rotary dimension, to float32
rounding), so installing CLEX changes nothing before training. The scale t is chosen as follows:

* training: the curriculum's draw, set with :meth:`CLEXRotaryEmbedding.use_scale`,
  frequencies solved afresh from t = 1 with gradients through the solver;
* otherwise: ``t = ceil(length / train_length)`` clipped to ``[1, max_scale]``,
  where ``length`` is the largest position + 1, read from a table of
  frequencies for every integer t that is solved once and reused until the ODE
  weights change (detected through their in-place version counters, which
  every optimizer step bumps).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from clexlab.rope.dynamics import CLEXDynamics
from clexlab.rope.fast_solver import solve_log_inv_freq_fast
from clexlab.rope.fused_rotary import angles_consumed, tag_angles
from clexlab.rope.own import OwnRope
from clexlab.rope.solver import SOLVERS, solve_log_inv_freq
from clexlab.rope.static_rotary import FrequencyCache


class CLEXRotaryEmbedding(nn.Module):
    """RoPE whose frequencies follow the learned CLEX ODE in the scale t.

    Args:
        head_dim: rotary dimension (the head dimension unless only part of each head rotates).
        base: RoPE base of the pretrained model.
        train_length: the length L the model was trained at (t = 1).
        max_scale: largest scale t_max the curriculum samples and eval uses.
        param_factor: width multiplier of the dynamics network.
        act: activation of the dynamics network (``tanh`` or ``silu``).
        time_dt: step of the fixed-step torchdiffeq solvers.
        solver: ``"fast"`` (sixth-order RK with a hand-written adjoint, see
            :mod:`clexlab.rope.fast_solver`) or a torchdiffeq method (``"rk4"``
            at ``time_dt`` 0.01 is the paper's reference).
        attention_scaling: factor applied to cos/sin (1.0 for plain RoPE).
        own: the model's own RoPE at t = 1 (frequencies and attention scaling);
            default: plain RoPE ``base^(-2i/d)`` with ``attention_scaling``.
        embedding_log_inv_freq: the time embedding's starting log-frequencies
            (released checkpoints: base 10000); default: the model's own.
    """

    def __init__(
        self,
        head_dim: int,
        base: float,
        train_length: int,
        max_scale: int,
        param_factor: int = 1,
        act: str = "tanh",
        time_dt: float = 0.01,
        solver: str = "fast",
        attention_scaling: float = 1.0,
        *,
        own: OwnRope | None = None,
        embedding_log_inv_freq: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if max_scale < 1:
            raise ValueError(f"max_scale must be >= 1, got {max_scale}")
        if time_dt <= 0:
            raise ValueError(f"time_dt must be > 0, got {time_dt}")
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if own is None:
            plain = OwnRope.plain(head_dim, base)
            own = OwnRope(plain.inv_freq, float(attention_scaling), plain.rope_type, plain.base, plain.parameters)
        if own.rotary_dim != head_dim:
            raise ValueError(f"the model's own RoPE rotates {own.rotary_dim} dimensions, not {head_dim}")
        self.own = own
        self.head_dim = head_dim
        self.train_length = int(train_length)
        self.max_scale = int(max_scale)
        self.time_dt = float(time_dt)
        self.solver = solver
        self.attention_scaling = own.attention_scaling
        self.dynamics = CLEXDynamics(
            head_dim, own.base, param_factor, act,
            log_inv_freq0=own.log_inv_freq(), embedding_log_inv_freq=embedding_log_inv_freq,
        )
        # float32 copies per device of the t = 1 log-frequencies (not a buffer: see static_rotary).
        self._log_inv_freq0 = FrequencyCache(own.log_inv_freq())
        self._scale_override: float | None = None
        self._table: torch.Tensor | None = None
        self._table_key: tuple | None = None
        self._cos_sin_cache: tuple | None = None
        # Set by install_clex when the model's attention takes the fused angle gradient.
        self.fused_rotary = False
        self._pending_angles: torch.Tensor | None = None  # the last fused training forward's angles

    @property
    def device(self) -> torch.device:
        """Where the ODE weights live (and so the solve runs)."""
        return self.dynamics.up_proj.device

    @property
    def log_inv_freq0(self) -> torch.Tensor:
        """float32 ``log inv_freq`` at t = 1, on the module's device."""
        return self._log_inv_freq0.on(self.device)

    # ----------------------------------------------------------------- scale
    def scale_for_length(self, length: int) -> int:
        """Evaluation scale for a sequence of ``length`` tokens: ``ceil(length/L)`` in ``[1, t_max]``."""
        return int(min(max(math.ceil(length / self.train_length), 1), self.max_scale))

    @contextlib.contextmanager
    def use_scale(self, t: float) -> Iterator[None]:
        """Force the scale for the forwards inside the block (the curriculum's draw; need not be an integer)."""
        if not 1 <= t <= self.max_scale:
            raise ValueError(f"scale t={t} outside [1, {self.max_scale}]")
        previous, self._scale_override = self._scale_override, (int(t) if float(t).is_integer() else float(t))
        try:
            yield
        finally:
            self._scale_override = previous

    # ----------------------------------------------------------- frequencies
    def _weights_key(self) -> tuple:
        params = (self.dynamics.up_proj, self.dynamics.down_proj)
        return tuple((p._version, p.data_ptr(), p.device, p.dtype) for p in params)

    def _solve(self, times: torch.Tensor) -> torch.Tensor:
        if self.solver == "fast":
            return solve_log_inv_freq_fast(self.dynamics, self.log_inv_freq0, times)
        return solve_log_inv_freq(self.dynamics, self.log_inv_freq0, times, self.time_dt, self.solver)

    def frequency_table(self) -> torch.Tensor:
        """``log inv_freq`` for every integer t in ``1..t_max``, ``[t_max, d/2]``, no grad.

        Solved in one pass over the grid and cached until the ODE weights change.
        """
        key = self._weights_key()
        if self._table is None or self._table_key != key:
            # inference_mode(False): a table built inside Lightning's inference-mode
            # validation must stay usable by later ordinary no-grad forwards.
            with torch.inference_mode(False), torch.no_grad():
                times = torch.arange(1, self.max_scale + 1, dtype=torch.float32, device=self.device)
                table = self._solve(times)
            self._table, self._table_key = table.detach(), key
        return self._table

    def log_inv_freq(self, t: float) -> torch.Tensor:
        """``log inv_freq`` at scale ``t``; differentiable when training (non-integer t: solved afresh)."""
        if t == 1:
            return self.log_inv_freq0
        needs_grad = (
            self.training
            and torch.is_grad_enabled()
            and any(p.requires_grad for p in self.dynamics.parameters())
        )
        if needs_grad or not float(t).is_integer():
            with contextlib.nullcontext() if needs_grad else torch.no_grad():
                return self._solve(torch.tensor([1.0, float(t)]))[-1]
        return self.frequency_table()[int(t) - 1]

    def inv_freq(self, t: float) -> torch.Tensor:
        """Inverse frequencies at scale ``t`` (the model's own at t = 1, to float32 rounding)."""
        return self.log_inv_freq(t).exp()

    def inv_freq_for_length(self, length: int) -> torch.Tensor:
        """Inverse frequencies of an evaluation forward over ``length`` positions (no grad)."""
        with torch.no_grad():
            return self.inv_freq(self.scale_for_length(length)).detach()

    def current_scale(self, position_ids: torch.Tensor) -> float:
        """The scale used for a forward at ``position_ids``."""
        if self._scale_override is not None:
            return self._scale_override
        return self.scale_for_length(int(position_ids.max().item()) + 1)

    def _cos_sin(self, t: float, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq(t).to(position_ids.device)
        batch = position_ids.shape[0]
        # Training passes one row of sampled positions expanded over the batch (stride 0):
        # compute cos/sin (and, through the solve, their backward) once, not once per row.
        shared = batch > 1 and position_ids.stride(0) == 0
        rows = position_ids[:1] if shared else position_ids
        device_type = position_ids.device.type if position_ids.device.type in ("cuda", "cpu") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            angles = rows[..., None].float() * inv_freq
            # Fused: cos/sin are constants to autograd and each layer sends one angle
            # gradient instead (clexlab.rope.fused_rotary); otherwise autograd differentiates them.
            fused = self.fused_rotary and angles.requires_grad
            # Detached: a tensor that requires grad would be re-wrapped on its way into an
            # FSDP2 unit (its backward hooks), which drops the tag below.
            source = angles.detach() if fused else angles
            emb = torch.cat((source, source), dim=-1)
            cos, sin = emb.cos(), emb.sin()
            if self.attention_scaling != 1.0:
                cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        cos, sin = cos.to(dtype), sin.to(dtype)
        if shared:
            cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)
        if fused:
            self._check_angles_consumed()
            tag_angles(cos, angles)
            self._pending_angles = angles
        return cos, sin

    def _check_angles_consumed(self) -> None:
        """Fail loudly if the previous training forward's tagged cos/sin never reached the fused rotary.

        The tables are constants to autograd on the fused path: if something
        between this module and the attention replaced them by a copy (no tag),
        the ODE would silently get no gradient at all.
        """
        pending, self._pending_angles = self._pending_angles, None
        if pending is not None and not angles_consumed(pending):
            raise RuntimeError(
                "CLEX's cos/sin reached no attention layer through clexlab.rope.fused_rotary (they were copied on "
                "the way, so the ODE got no gradient): set fused_rotary = False on the CLEX rotary module"
            )

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)`` of shape ``[batch, seq, head_dim]`` in ``x.dtype``."""
        t = self.current_scale(position_ids)
        if torch.is_grad_enabled():
            return self._cos_sin(t, position_ids, x.dtype)
        # Without grad (evaluation, generation), batches of one length share one
        # row of positions: keep its cos/sin until t, the positions or the weights change.
        row = position_ids[:1]
        key = (t, row.shape, row.device, x.dtype, self._weights_key())
        cached = self._cos_sin_cache
        if cached is None or cached[0] != key or not torch.equal(cached[1], row):
            # inference_mode(False) alone would switch grad mode back on (it restores normal mode).
            with torch.inference_mode(False), torch.no_grad():
                row = row.clone()
                cached = self._cos_sin_cache = (key, row, *self._cos_sin(t, row, x.dtype))
        if position_ids.shape[0] > 1 and not torch.equal(position_ids, row.expand_as(position_ids)):
            return self._cos_sin(t, position_ids, x.dtype)  # rows differ (e.g. left padding)
        batch = position_ids.shape[0]
        return cached[2].expand(batch, -1, -1), cached[3].expand(batch, -1, -1)

    def extra_repr(self) -> str:
        return (
            f"rotary_dim={self.head_dim}, own={self.own.rope_type}, train_length={self.train_length}, "
            f"max_scale={self.max_scale}, time_dt={self.time_dt}, solver={self.solver}"
        )
