"""``rope=clex``: CLEX (Chen et al., ICLR 2024), the learned ODE over the log-frequencies.

Its settings live in the top-level ``clex`` node (``clex.max_scale=16`` and the
rest, see conf/train.yaml), which :func:`clexlab.rope.methods.method_from_config`
hands to this class because it declares ``config_node = "clex"``.
"""

from __future__ import annotations

import contextlib
from typing import Any

from torch import nn

from clexlab.arch import architecture_of
from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.methods.base import RopeMethod
from clexlab.utils.errors import UserError


class CLEX(RopeMethod):
    """CLEX with the options of the ``clex`` node.

    Args:
        factor: unused (CLEX's scale is continuous); accepted so every rope node has one.
        max_scale: t_max: the curriculum draws t in ``[1, t_max]``; evaluation clips t to it.
        param_factor: hidden width of the dynamics network over the rotary dimension.
        act: ``tanh`` or ``silu``.
        time_dt: step of the torchdiffeq solvers.
        lr: learning rate of the ODE weights (their own AdamW group, no weight decay).
        log_scale: multiply queries by ``log(n)/log(L)`` (the released option).
        solver: ``fast`` or a torchdiffeq method (``rk4`` is the paper's reference).
        freeze: keep the ODE at its initialisation (the NTK schedule alpha = 2t - 1).
    """

    name = "clex"
    min_rotary_dim = 4  # the NTK rule divides by d - 2
    config_node = "clex"
    samples_positions = True
    exports = True
    uses_scale = True
    continuous_scale = True

    def __init__(
        self,
        factor: float = 1.0,
        max_scale: int = 8,
        param_factor: int = 1,
        act: str = "tanh",
        time_dt: float = 0.01,
        lr: float = 1e-5,
        log_scale: bool = False,
        solver: str = "fast",
        freeze: bool = False,
    ) -> None:
        super().__init__(factor)
        if isinstance(max_scale, bool) or not isinstance(max_scale, int) or max_scale < 1:
            raise UserError(f"clex.max_scale must be an integer >= 1, got {max_scale!r}")
        self._max_scale = max_scale
        self.options = {"param_factor": int(param_factor), "act": str(act), "time_dt": float(time_dt), "solver": str(solver)}
        self.lr = float(lr)
        self.log_scale = bool(log_scale)
        self.freeze = bool(freeze)

    @property
    def max_scale(self) -> int:
        return self._max_scale

    def install(self, model: nn.Module, train_length: int) -> nn.Module:
        from clexlab.rope.install import install_clex
        from clexlab.rope.log_scale import enable_log_scale

        rotary = install_clex(model, train_length=train_length, max_scale=self._max_scale, **self.options)
        # A frozen ODE is the pure NTK schedule alpha = 2t - 1 (the reviewers' ablation).
        rotary.dynamics.requires_grad_(not self.freeze)
        if self.log_scale:
            enable_log_scale(model, train_length)
        return rotary

    def setup_cost(self) -> tuple[float, str]:
        # One solve from t = 1 to t_max (the evaluation table; a training step at t_max solves the
        # same span again). Seconds per unit of t on a 2-core CPU, measured with the tiny model's
        # 32 frequencies: the fast solver ~3e-4; the torchdiffeq solvers ~2.5e-4 per function
        # evaluation, at 1/time_dt steps per unit and 1 (euler) to 6 (dopri5) evaluations per step.
        span = self._max_scale - 1
        solver = self.options["solver"]
        if solver == "fast":
            seconds = span * 3e-4
        else:
            evaluations = {"euler": 1, "midpoint": 2, "rk4": 4}.get(solver, 6)
            seconds = span / self.options["time_dt"] * evaluations * 2.5e-4
        return seconds, f"clex.max_scale={self._max_scale} with clex.solver={solver} (time_dt {self.options['time_dt']:g})"

    def trainable_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        rotary = architecture_of(model).rotary(model)
        return [p for p in rotary.parameters() if p.requires_grad] if isinstance(rotary, CLEXRotaryEmbedding) else []

    def optimizer_options(self) -> dict[str, Any]:
        # The ODE needs its own (much smaller) learning rate: at the model's
        # lr the frequencies drift toward interpolation and extrapolation fails.
        return {"lr": self.lr, "weight_decay": 0.0}

    def scale(self, model: nn.Module, t: float) -> contextlib.AbstractContextManager:
        return architecture_of(model).rotary(model).use_scale(t)

    def label(self, position_sampling: bool) -> str:
        label = "clex-frozen" if self.freeze else "clex"
        return label if position_sampling else f"{label}-contiguous"

    def describe(self) -> str:
        return f"clex (t_max {self._max_scale})"

    def summary(self) -> dict[str, Any]:
        return {"rope": self.name, "max_scale": self._max_scale, "clex_freeze": self.freeze}
