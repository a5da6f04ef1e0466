"""The dry run's memory arithmetic against one real CPU training step of a tiny LLaMA + CLEX.

Measured, not assumed: parameter, gradient and AdamW-state bytes are summed
from the tensors after a real step; activations are the tensors autograd saved
for backward (``saved_tensors_hooks``, deduplicated by storage, parameters
excluded) plus the rotary cos/sin every layer reads; bf16 weight copies are the
casts of parameters that autocast made during the forward.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from clexlab.curriculum import UniformScaleCurriculum
from clexlab.models.builder import build_model
from clexlab.models.loss import causal_lm_nll
from clexlab.models.memory_plan import ModelShape, StepSetup, count_parameters, plan_memory
from clexlab.rope import find_rotary
from clexlab.rope.factory import install_rope

# Sizes chosen so no two kinds of tensor share a shape by accident; GQA (2 kv heads of 4) on purpose.
MODEL = {
    "name": "plan-tiny",
    "path": None,
    "tokenizer": "bytes",
    "train_length": 160,
    "hidden_size": 96,
    "num_layers": 3,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 256,
    "rope_theta": 10000.0,
    "dtype": "float32",
    "attn_implementation": "sdpa",
}
CLEX = {"max_scale": 4, "param_factor": 1, "act": "tanh", "time_dt": 0.1, "lr": 1e-4, "log_scale": False, "solver": "fast"}
VOCAB, BATCH = 300, 2
ACTIVATION_TOLERANCE = 0.01  # measured: within 48 bytes (the ODE's inv_freq); the rest is headroom


class _WeightCasts(TorchDispatchMode):
    """Records the storages of every copy made *of a parameter* (autocast's bf16 weight casts)."""

    def __init__(self, param_ptrs: set[int]) -> None:
        super().__init__()
        self.param_ptrs = param_ptrs
        self.casts: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten._to_copy.default and args[0].untyped_storage().data_ptr() in self.param_ptrs:
            storage = out.untyped_storage()
            self.casts[storage.data_ptr()] = storage.nbytes()
        return out


def _storages(tensors) -> dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def measure_step(precision: str, gradient_checkpointing: bool, attn: str = "sdpa", seq_len: int = 160) -> dict:
    """One forward/backward/AdamW step as ``LongContextLM.training_step`` runs it; bytes by kind."""
    torch.manual_seed(0)
    cfg = {**MODEL, "gradient_checkpointing": gradient_checkpointing, "attn_implementation": attn, "train_length": seq_len}
    model = build_model(cfg, VOCAB)
    install_rope(model, {"name": "clex"}, seq_len, CLEX)
    if precision == "bf16-true":
        model = model.to(torch.bfloat16)  # what Lightning's bf16-true does to the whole module
    model.train()
    params = list(model.parameters())
    param_ptrs = set(_storages(params))
    linear_ptrs = set(_storages([m.weight for m in model.modules() if isinstance(m, nn.Linear)]))

    ids = torch.randint(0, VOCAB, (BATCH, seq_len))
    curriculum = UniformScaleCurriculum(CLEX["max_scale"], seed=0)
    # A step whose t > 1, so the ODE is in the graph and gets gradients and AdamW state.
    draw = next(d for d in (curriculum.sample(step, seq_len) for step in range(100)) if d.t > 1)
    positions = draw.positions.unsqueeze(0).expand_as(ids)  # stride-0 rows, as in training_step

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    rotary_out: dict[int, int] = {}
    # cos/sin are handed to every layer; under checkpointing they travel as closure
    # arguments that no saved-tensor hook sees, but they are alive all the same.
    hook = find_rotary(model).register_forward_hook(lambda m, a, out: rotary_out.update(_storages(out)))
    spy = _WeightCasts(linear_ptrs)  # the ODE's own float64/float32 copies are the solver's, not autocast's
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), spy, autocast:
        with find_rotary(model).use_scale(draw.t):
            nll, count = causal_lm_nll(model, ids, ids, positions)
    hook.remove()
    (nll / count).backward()
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimizer.step()

    casts = spy.casts
    activations = {k: v for k, v in {**saved, **rotary_out}.items() if k not in casts}
    return {
        "model": model,
        "weights": sum(_storages(params).values()),
        "gradients": sum(_storages([p.grad for p in params if p.grad is not None]).values()),
        "optimizer": sum(t.nbytes for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)),
        "activations": sum(activations.values()),
        "compute_copies": sum(casts.values()),
    }


def plan_for(measured: dict, precision: str, gradient_checkpointing: bool, attn: str = "sdpa", seq_len: int = 160):
    model = measured["model"]
    setup = StepSetup(
        seq_len=seq_len,
        batch=BATCH,
        precision=precision,
        gradient_checkpointing=gradient_checkpointing,
        attn_implementation=attn,
        trainable_rope=True,
    )
    return plan_memory(ModelShape.from_config(model.config), count_parameters(model), setup)


CASES = [
    ("32-true", False, "sdpa"),
    ("32-true", True, "sdpa"),
    ("bf16-mixed", False, "sdpa"),
    ("bf16-mixed", True, "sdpa"),
    ("bf16-true", False, "sdpa"),
    ("32-true", False, "eager"),
    ("bf16-mixed", False, "eager"),
]


@pytest.mark.parametrize("precision,checkpointing,attn", CASES)
def test_plan_matches_a_measured_step(precision, checkpointing, attn):
    measured = measure_step(precision, checkpointing, attn)
    plan = plan_for(measured, precision, checkpointing, attn)
    # Parameters, gradients and AdamW state are plain arithmetic: exact.
    assert plan["weights"] == measured["weights"]
    assert plan["gradients"] == measured["gradients"]
    assert plan["optimizer"] == measured["optimizer"]
    # Activations within ACTIVATION_TOLERANCE of what autograd really saved.
    assert plan["activations"] == pytest.approx(measured["activations"], rel=ACTIVATION_TOLERANCE), (
        precision, checkpointing, attn, plan["activations"], measured["activations"])
    if precision == "bf16-mixed":
        # Every linear weight cast to bf16 exactly once during the forward.
        assert measured["compute_copies"] > 0
        assert plan["compute_copies"] == measured["compute_copies"]
    else:
        assert measured["compute_copies"] == 0 and plan["compute_copies"] == 0


def test_plan_tracks_what_changes_activations():
    """Not trivially right: checkpointing, precision and eager attention move the figures as measured."""
    runs = {case: measure_step(*case) for case in [("32-true", False, "sdpa"), ("32-true", True, "sdpa"), ("32-true", False, "eager")]}
    plans = {case: plan_for(m, *case) for case, m in runs.items()}
    full, ckpt, eager = ("32-true", False, "sdpa"), ("32-true", True, "sdpa"), ("32-true", False, "eager")
    measured_ratio = runs[full]["activations"] / runs[ckpt]["activations"]
    planned_ratio = plans[full]["activations"] / plans[ckpt]["activations"]
    assert measured_ratio > 3  # checkpointing really saves most of it at this size
    assert planned_ratio == pytest.approx(measured_ratio, rel=0.05)
    # Eager keeps [B, H, N, N] float32 probabilities per layer: the extra grows like N^2.
    extra_measured = runs[eager]["activations"] - runs[full]["activations"]
    extra_planned = plans[eager]["activations"] - plans[full]["activations"]
    assert extra_measured > BATCH * MODEL["num_heads"] * 160 * 160 * 4 * MODEL["num_layers"] * 0.9
    assert extra_planned == pytest.approx(extra_measured, rel=0.05)


def test_activations_scale_with_sequence_length():
    short, long = measure_step("32-true", False, seq_len=80), measure_step("32-true", False, seq_len=240)
    planned = [plan_for(short, "32-true", False, seq_len=80), plan_for(long, "32-true", False, seq_len=240)]
    assert planned[0]["activations"] == pytest.approx(short["activations"], rel=ACTIVATION_TOLERANCE)
    assert planned[1]["activations"] == pytest.approx(long["activations"], rel=ACTIVATION_TOLERANCE)


def test_sharding_divides_states_and_adds_gathered_layers():
    """FSDP over 8: weights/grads/AdamW / 8 (the replicated ODE whole), plus the unsharded units in flight."""
    model = build_model({**MODEL, "gradient_checkpointing": False}, VOCAB)
    install_rope(model, {"name": "clex"}, 160, CLEX)
    counts = count_parameters(model)
    shape = ModelShape.from_config(model.config)
    one = plan_memory(shape, counts, StepSetup(seq_len=160, batch=1, precision="bf16-mixed"))
    eight = plan_memory(shape, counts, StepSetup(seq_len=160, batch=1, precision="bf16-mixed", shards=8))
    sharded = counts.total - counts.ode
    assert eight["weights"] == 4 * (sharded // 8 + counts.ode)
    assert eight["optimizer"] == 2 * 4 * (sharded // 8 + counts.ode) + 4 * counts.tensors
    assert one["gathered"] == 0
    assert eight["gathered"] == 4 * (counts.root + 3 * counts.layer)
    # Activations and autocast copies are per GPU whatever the sharding.
    assert eight["activations"] == one["activations"] and eight["compute_copies"] == one["compute_copies"]
    assert counts.ode == MODEL["hidden_size"] // MODEL["num_heads"] * MODEL["hidden_size"] // MODEL["num_heads"]


def test_unknown_precision_is_refused():
    shape = ModelShape(64, 2, 4, 4, 16, 128, 100)
    with pytest.raises(ValueError, match="precision"):
        plan_memory(shape, count_parameters(nn.Linear(2, 2)), StepSetup(seq_len=8, batch=1, precision="64-true"))
