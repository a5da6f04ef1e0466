"""FSDP2 (``fully_shard``) for a transformers causal LM, and the gradient work it needs.

Plain torch: Lightning decides *when* (``LongContextLM.configure_model`` under
``ModelParallelStrategy``), this module decides *what*:

* every decoder layer is its own FSDP2 unit (its parameters are all-gathered
  just before the layer runs and freed after), then the root holds the rest:
  embeddings, final norm, LM head;
* clexlab's loss does not call the model's ``forward`` (it runs the backbone
  and projects hidden states with ``lm_head.weight`` in chunks), so FSDP2
  would never gather the root's parameters nor reduce their gradients. The
  loss is therefore attached to the root as an extra forward method
  (``register_fsdp_forward_method``), and evaluation code that reads the root's
  weights directly runs inside :func:`gathered_root`;
* parameters named in ``keep_replicated`` (clexlab passes the CLEX ODE, a few
  thousand numbers shared by every layer) are left out of FSDP: every rank
  holds the whole tensor, and :func:`all_reduce_grads` averages their
  gradients before each optimizer step. Keeping them plain keeps the rope
  module free of DTensors (its frequency table and figures work on any rank,
  no collective needed), and keeps its cache sound:
  :class:`~clexlab.rope.clex.CLEXRotaryEmbedding` keys its frequency table on
  the ODE tensors' version counters and storage addresses, and FSDP2 refills a
  gathered parameter in place *without* bumping its version counter, so for a
  sharded ODE only a changed storage address would reveal new weights;
* under a mixed precision (``bf16-mixed``, ``16-mixed``) every unit gets a
  :func:`mixed_precision_policy`: the sharded master weights stay float32 (as
  do the optimizer state and the reduced gradients), each unit is all-gathered
  straight in bf16/fp16 and computes in it, and its gradients are converted to
  float32 before the reduce-scatter. Autocast then finds low-precision weights
  and caches no copy of them (without the policy it would keep a bf16 copy of
  every gathered weight until the end of the forward: the whole model on every
  rank). The residual stream, the norms and the rotary cos/sin are then in the
  low precision too, as in a model loaded in bf16. The replicated ODE is not
  FSDP's: it stays float32, and the rope solves it and builds its angles in
  float32 itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

LOW_PRECISION = (torch.bfloat16, torch.float16)


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


def is_dtensor(tensor: torch.Tensor | None) -> bool:
    """True for a ``DTensor`` (a sharded parameter or gradient)."""
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def is_sharded(module: nn.Module) -> bool:
    """True once ``fully_shard`` has turned some of ``module``'s parameters into DTensors."""
    return any(is_dtensor(p) for p in module.parameters())


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor, or the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The repeated transformer blocks of a transformers causal LM (through its family's adapter)."""
    from clexlab.arch import architecture_of

    return architecture_of(model).layers(model)


def data_parallel_mesh(device: torch.device):
    """A 1-D device mesh over every rank of the default process group.

    clexlab applies FSDP only (no tensor parallelism), so all ranks form one
    sharding group whatever 2-D mesh Lightning's strategy built for
    tensor x data parallelism.
    """
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (dist.get_world_size(),), mesh_dim_names=("fsdp",))


# Lightning precision flag -> the dtype FSDP2 gathers and computes in (mixed precisions only).
MIXED_PARAM_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def mixed_precision_policy(precision: str | None):
    """FSDP2's policy for a Lightning precision flag, or None when the weights are gathered as stored.

    ``bf16-mixed`` / ``16-mixed``: ``MixedPrecisionPolicy(param_dtype=bf16 / fp16,
    reduce_dtype=float32)`` (float32 master weights, low-precision all-gather and
    compute, float32 gradient reduction). ``32-true`` and the ``*-true`` half
    precisions store the weights in the dtype they compute in: no policy.
    """
    dtype = MIXED_PARAM_DTYPES.get(str(precision))
    if dtype is None:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_model(
    model: nn.Module,
    mesh,
    keep_replicated: Iterable[nn.Parameter] = (),
    forward_methods: Mapping[str, Callable] | None = None,
    mp_policy=None,
) -> list[nn.Parameter]:
    """``fully_shard`` each decoder layer, then the root; return the parameters left replicated.

    Args:
        model: a transformers causal LM (not sharded yet).
        mesh: the 1-D mesh to shard over (:func:`data_parallel_mesh`).
        keep_replicated: parameters FSDP must not touch; their gradients are
            the caller's to synchronise (:func:`all_reduce_grads`).
        forward_methods: ``{name: fn}``: callables that use the model's
            weights without calling its ``forward`` (the chunked loss). Each is
            set as ``model.<name>`` and registered with FSDP2, so calling it
            gathers the root's parameters and reduces their gradients like a forward.
        mp_policy: a ``MixedPrecisionPolicy`` for every unit
            (:func:`mixed_precision_policy`); None gathers the stored dtype.
            The parameters in ``keep_replicated`` are not FSDP's and keep their dtype.
    """
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    replicated = [p for p in keep_replicated]
    ignored = set(replicated)
    policy = {} if mp_policy is None else {"mp_policy": mp_policy}
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, **policy)
    # The root keeps its parameters gathered after forward (FSDP2's default for a
    # root), as the LM head and embeddings are needed again at once by backward.
    fully_shard(model, mesh=mesh, ignored_params=ignored or None, **policy)
    for name, fn in (forward_methods or {}).items():
        setattr(model, name, fn)
        register_fsdp_forward_method(model, name)
    return replicated


@contextlib.contextmanager
def gathered_root(model: nn.Module) -> Iterator[None]:
    """Hold the root's parameters (embeddings, norm, LM head) gathered for the block; a no-op when not sharded.

    For no-grad code that reads them without calling ``forward`` (the chunked
    perplexity). The decoder layers gather themselves when they run. Every
    rank must enter the block, and run the same forwards inside it.
    """
    if not hasattr(model, "unshard") or not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def upcast_low_precision(model: nn.Module) -> bool:
    """Cast bf16/fp16 parameters and buffers to float32 in place; True when anything changed.

    Called after :func:`shard_model`, each rank only converts its own shard, so
    no rank ever holds a full float32 copy of a model loaded in bf16.
    """
    if not any(p.is_floating_point() and p.dtype in LOW_PRECISION for p in model.parameters()):
        return False
    model.float()  # FSDP2 modules re-shard the converted parameters themselves (FSDPModule._apply)
    return True


def all_reduce_grads(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of replicated parameters over all ranks (one flat all-reduce).

    Every rank must call this with the same parameters, all with or all
    without a gradient (the curriculum gives every rank the same scale t, so
    they agree on whether the ODE took part in the step).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def clip_grad_norm_mixed(params: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip by the global 2-norm over sharded (DTensor) and replicated (plain) gradients.

    ``torch.nn.utils.clip_grad_norm_`` refuses a mix of DTensor and plain
    gradients (it stacks their norms). Here the sharded part's norm is reduced
    over the ranks and combined with the replicated part's, which every rank
    holds whole, so all ranks scale by the same factor.

    Returns:
        The total norm before clipping.
    """
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g for g in grads if is_dtensor(g)]
    plain = [g for g in grads if not is_dtensor(g)]
    squared = 0.0
    if sharded:
        norm = torch.nn.utils.get_total_norm(sharded, 2.0)
        norm = norm.full_tensor() if is_dtensor(norm) else norm
        squared += float(norm) ** 2
    if plain:
        squared += float(torch.nn.utils.get_total_norm(plain, 2.0)) ** 2
    total = math.sqrt(squared)
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)  # a Python float keeps DTensor and plain gradients apart
    return total


def clip_grad_value_mixed(params: Iterable[nn.Parameter], value: float) -> None:
    """Clamp every gradient element to ``[-value, value]`` (elementwise, so shards need no communication)."""
    for p in params:
        if p.grad is not None:
            p.grad.clamp_(-value, value)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole, unsharded state dict on rank 0 (CPU); an empty dict on the other ranks.

    Every rank must call it: the shards are gathered one parameter at a time.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
