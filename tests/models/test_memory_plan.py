"""The dry run's memory arithmetic against one real CPU training step of a tiny LLaMA + CLEX.

Measured, not assumed: parameter, gradient and AdamW-state bytes are summed
from the tensors after a real step; activations are the tensors autograd saved
for backward (``saved_tensors_hooks``, deduplicated by storage, parameters
excluded) plus the rotary cos/sin every layer reads; bf16 weight copies are the
casts of parameters that autocast made during the forward. The FSDP2 case runs
a real one-rank ``fully_shard`` step (gloo, world of 1) in a subprocess: this
file's ``__main__``.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from clexlab.curriculum import UniformScaleCurriculum
from clexlab.models.builder import build_model
from clexlab.models.loss import causal_lm_nll
from clexlab.models import sharding
from clexlab.models.memory_plan import ModelShape, ParamCounts, StepSetup, count_parameters, plan_memory
from clexlab.rope import find_rotary
from clexlab.rope.methods import method_from_config
from tests.distributed.helpers import GatheredWeightCasts

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
    method_from_config("clex", {"clex": CLEX}).install(model, seq_len)
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
    method_from_config("clex", {"clex": CLEX}).install(model, 160)
    counts = count_parameters(model)
    shape = ModelShape.from_config(model.config)

    def plan(precision: str, shards: int = 1, **kw):
        return plan_memory(shape, counts, StepSetup(seq_len=160, batch=1, precision=precision, shards=shards, **kw))

    one, eight = plan("bf16-mixed"), plan("bf16-mixed", 8)
    sharded = counts.total - counts.ode
    assert eight["weights"] == 4 * (sharded // 8 + counts.ode)
    assert eight["optimizer"] == 2 * 4 * (sharded // 8 + counts.ode) + 4 * counts.tensors
    assert one["gathered"] == 0 and not one.setup.sharded and eight.setup.sharded
    # bf16-mixed under FSDP: the units are gathered in bf16 (FSDP2's mixed precision policy),
    # one layer's gradients reduce-scattered in float32, and autocast copies nothing ...
    assert eight["gathered"] == 2 * (counts.root + 2 * counts.layer) + 4 * counts.layer
    assert one["compute_copies"] == 2 * counts.matmul and eight["compute_copies"] == 0
    # ... so the activations are a bf16 model's (bf16 residual stream, no per-projection casts).
    assert eight["activations"] == plan("bf16-true")["activations"] < one["activations"]
    # 32-true: gathered as stored, activations per GPU whatever the sharding.
    full, full8 = plan("32-true"), plan("32-true", 8)
    assert full8["gathered"] == 4 * (counts.root + 3 * counts.layer)
    assert full8["activations"] == full["activations"] and full8["compute_copies"] == 0
    # FSDP on one GPU (trainer=fsdp trainer.devices=1) gathers too, and in bf16.
    fsdp1 = plan("bf16-mixed", 1, fsdp=True)
    assert fsdp1["gathered"] == eight["gathered"] and fsdp1["compute_copies"] == 0
    assert fsdp1["weights"] == one["weights"]
    assert counts.ode == MODEL["hidden_size"] // MODEL["num_heads"] * MODEL["hidden_size"] // MODEL["num_heads"]


def test_unknown_precision_is_refused():
    shape = ModelShape(64, 2, 4, 4, 16, 128, 100)
    with pytest.raises(ValueError, match="precision"):
        plan_memory(shape, ParamCounts(*[0] * 9), StepSetup(seq_len=8, batch=1, precision="64-true"))


# ------------------------------------------------------------------ FSDP2, measured
def measure_fsdp_step(policy: bool, gradient_checkpointing: bool, seq_len: int = 160) -> dict:
    """One bf16-mixed step of the model sharded as ``LongContextLM.configure_model`` shards it.

    Needs a process group (``__main__`` starts a gloo world of one). ``policy``:
    FSDP2's ``MixedPrecisionPolicy`` as clexlab sets it for bf16-mixed, or
    none (float32 gathered, the copies autocast then makes are counted).
    """
    torch.manual_seed(0)
    model = build_model({**MODEL, "gradient_checkpointing": gradient_checkpointing, "train_length": seq_len}, VOCAB)
    method_from_config("clex", {"clex": CLEX}).install(model, seq_len)
    model.train()
    ode = [p for name, p in model.named_parameters() if ".rotary_emb." in name]
    sharding.shard_model(
        model,
        sharding.data_parallel_mesh(torch.device("cpu")),
        keep_replicated=ode,
        forward_methods={"nll": functools.partial(causal_lm_nll, model)},
        mp_policy=sharding.mixed_precision_policy("bf16-mixed") if policy else None,
    )
    spy = GatheredWeightCasts(model, {id(p) for p in ode})
    seen: dict = {"linear": set()}

    def linear_pre(module, args):
        seen["linear"].add((str(module.weight.dtype), sharding.is_dtensor(module.weight)))

    def layer_pre(module, args):  # runs after FSDP's own pre-forward (prepended): the layer is gathered
        seen["layer"] = sum(_storages(list(module.parameters())).values())

    hooks = [m.register_forward_pre_hook(linear_pre) for m in model.modules() if isinstance(m, nn.Linear)]
    hooks.append(sharding.decoder_layers(model)[0].register_forward_pre_hook(layer_pre))
    rotary_out: dict[int, int] = {}
    hooks.append(find_rotary(model).register_forward_hook(lambda m, a, out: rotary_out.update(_storages(out))))

    ids = torch.randint(0, VOCAB, (BATCH, seq_len))
    curriculum = UniformScaleCurriculum(CLEX["max_scale"], seed=0)
    draw = next(d for d in (curriculum.sample(step, seq_len) for step in range(100)) if d.t > 1)
    positions = draw.positions.unsqueeze(0).expand_as(ids)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in spy.gathered():  # the gathered weights are not activations
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), spy, torch.autocast("cpu", dtype=torch.bfloat16):
        with find_rotary(model).use_scale(draw.t):
            nll, count = model.nll(ids, ids, positions)  # as training_step, through FSDP's hooks
    for hook in hooks:
        hook.remove()
    # The root (embeddings, final norm, LM head) stays gathered after the forward.
    in_layers = {id(p) for layer in sharding.decoder_layers(model) for p in layer.parameters()}
    root = [p for name, p in model.named_parameters() if id(p) not in in_layers and ".rotary_emb." not in name]
    assert not any(sharding.is_dtensor(p) for p in root)
    root_bytes, root_dtypes = sum(_storages(root).values()), sorted({str(p.dtype) for p in root})
    (nll / count).backward()
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    optimizer.step()
    local = sharding.local_part
    activations = {k: v for k, v in {**saved, **rotary_out}.items() if k not in spy.casts}
    return {
        "weights": sum(_storages([local(p) for p in params]).values()),
        "weight_dtypes": sorted({str(p.dtype) for p in params}),
        "gradients": sum(_storages([local(p.grad) for p in params if p.grad is not None]).values()),
        "optimizer": sum(local(t).nbytes for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)),
        "activations": sum(activations.values()),
        "compute_copies": sum(spy.casts.values()),
        "linear_weights": sorted(f"{d}{' DTensor' if dt else ''}" for d, dt in seen["linear"]),
        "layer_gathered": seen["layer"],
        "root_gathered": root_bytes,
        "root_dtypes": root_dtypes,
        "ode_grads": [str(p.grad.dtype) if p.grad is not None else None for p in ode],
        "ode_grad_norm": float(sum(p.grad.norm() for p in ode if p.grad is not None)),
    }


FSDP_CASES = [(True, False), (True, True), (False, False)]  # (policy, gradient checkpointing)


@pytest.fixture(scope="module")
def fsdp_steps() -> dict:
    """The FSDP_CASES measured by one subprocess (a gloo world of one, this file's __main__)."""
    from tests.conftest import ROOT

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-m", "tests.models.test_memory_plan"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(steps) == len(FSDP_CASES), res.stdout[-3000:]
    return {tuple(step["case"]): step for step in steps}


def test_fsdp_bf16_mixed_plan_matches_a_measured_fully_shard_step(fsdp_steps):
    """bf16-mixed under FSDP2 (``trainer=fsdp``): bf16 units over float32 shards, no autocast weight copies."""
    model = build_model({**MODEL, "gradient_checkpointing": False}, VOCAB)
    method_from_config("clex", {"clex": CLEX}).install(model, 160)
    counts, shape = count_parameters(model), ModelShape.from_config(model.config)
    for checkpointing in (False, True):
        measured = fsdp_steps[(True, checkpointing)]
        setup = StepSetup(seq_len=160, batch=BATCH, precision="bf16-mixed", fsdp=True, gradient_checkpointing=checkpointing)
        plan = plan_memory(shape, counts, setup)
        # Float32 master weights (the ODE included), gradients and AdamW state, exactly.
        assert measured["weight_dtypes"] == ["torch.float32"] and measured["ode_grads"] == ["torch.float32"] * 2
        assert plan["weights"] == measured["weights"]
        assert plan["gradients"] == measured["gradients"]
        assert plan["optimizer"] == measured["optimizer"]
        # Every linear layer computed with a gathered bf16 weight, and autocast copied none.
        assert measured["linear_weights"] == ["torch.bfloat16"]
        assert measured["compute_copies"] == plan["compute_copies"] == 0
        # The gathered units: root and one layer in bf16 (+ one layer's float32 gradients, by definition).
        assert measured["root_dtypes"] == ["torch.bfloat16"]
        assert plan["gathered"] == measured["root_gathered"] + 2 * measured["layer_gathered"] + 4 * counts.layer
        assert measured["layer_gathered"] == 2 * counts.layer
        # What autograd saved: a bf16 model's activations.
        assert plan["activations"] == pytest.approx(measured["activations"], rel=ACTIVATION_TOLERANCE), (
            checkpointing, plan["activations"], measured["activations"])
        assert measured["ode_grad_norm"] > 0  # the ODE learns through the bf16 layers (the fused rotary's gradient)


def test_fsdp_without_the_policy_would_copy_every_gathered_weight(fsdp_steps):
    """The control: float32 gathered, autocast caches a bf16 copy of every linear weight (what the policy removes)."""
    model = build_model({**MODEL, "gradient_checkpointing": False}, VOCAB)
    method_from_config("clex", {"clex": CLEX}).install(model, 160)
    counts = count_parameters(model)
    measured, policy = fsdp_steps[(False, False)], fsdp_steps[(True, False)]
    assert measured["linear_weights"] == ["torch.float32"]
    assert measured["compute_copies"] == 2 * counts.matmul  # the spy sees them when they exist
    assert measured["layer_gathered"] == 2 * policy["layer_gathered"]  # and the all-gathers were twice as big
    assert measured["activations"] > 1.3 * policy["activations"]


if __name__ == "__main__":
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        for case in FSDP_CASES:
            print(json.dumps({"case": list(case), **measure_fsdp_step(*case)}), flush=True)
    finally:
        dist.destroy_process_group()
