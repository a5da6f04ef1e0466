"""Per-GPU memory of one training step, from shapes alone: the arithmetic behind ``dry_run=true``.

Why a model and not a measurement: the point is to know before renting eight
GPUs whether LLaMA-2-7B at L = 4096 fits, on a laptop, with the model built on
the meta device. Every activation term below is what PyTorch really keeps for
the backward pass of *this* code (transformers' Llama, clexlab's fused CLEX
rotary, the chunked loss of :mod:`clexlab.models.loss`), counted tensor by
tensor; ``tests/models/test_memory_plan.py`` holds the sums against a measured
CPU step (parameters, gradients, AdamW state, saved tensors).

Notation: B micro-batch, N sequence length, h hidden size, kv = kv_heads x
head_dim, I intermediate size, H heads, V vocabulary. Bytes: ``s`` of the stored
weights (4 unless ``*-true`` half precision), ``c`` of the matmuls (2 under
bf16/fp16), ``r`` of the residual stream (= s: autocast leaves it float32).

Mixed precision under FSDP is different (:func:`clexlab.models.sharding.mixed_precision_policy`):
FSDP2 gathers every unit in bf16/fp16 over the float32 shards, so the layers
compute on low-precision weights. Autocast then casts no weight (no copies)
and no projection input, and the embeddings and norms put out bf16: the
activations are those of a ``bf16-true`` model (r = c), and the gathered
units take c bytes a parameter.

What one decoder layer keeps for backward (no gradient checkpointing):

* each RMSNorm: its float32 input (4BNh), ``rsqrt`` (4BN) and the normalised
  input in the residual dtype (r·BNh);
* the input of the projections: once when no cast is needed; under autocast
  over float32 weights one bf16 copy per projection, since autocast caches
  casts of weights only (q, k, v: 3 copies; gate, up: 2);
* attention (SDPA / flash): q, k, v (GQA not repeated: transformers passes
  ``enable_gqa`` when no mask is needed) and the output in c, plus the float32
  logsumexp [B, H, N]; never the N x N scores. Eager: q, repeated k and v and the
  output (c·BNh each) plus the float32 softmax [B, H, N, N] (and its c-byte cast);
* trainable CLEX: the rotated q and k, in the promoted dtype r (the fused
  rotary of :mod:`clexlab.rope.fused_rotary` saves them for its angle
  gradient); SDPA saves those same tensors unless autocast re-casts them, eager
  always copies them, and then they are extra;
* the MLP: gate, silu(gate), up and their product (4·c·BNI).

Gradient checkpointing keeps only each layer's input (r·BNh) and recomputes one
layer at a time in backward. The loss never materialises [N, V] logits: it
keeps the final hidden states and recomputes 1024 positions at a time. Left
out: the ODE solve (a few KiB). The backward transient (one layer's recompute,
one loss chunk, gradients in flight) is an estimate; the tests measure the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

GIB = 1024**3
OPTIMIZER_STATES = 2  # AdamW: exp_avg and exp_avg_sq, in the parameter's dtype
STEP_BYTES = 4  # AdamW's per-tensor `step` counter (a float32 scalar tensor)

# precision flag -> (stored weight bytes s, matmul bytes c, autocast?)
PRECISIONS: dict[str, tuple[int, int, bool]] = {
    "32-true": (4, 4, False),
    "32": (4, 4, False),
    "bf16-mixed": (4, 2, True),
    "16-mixed": (4, 2, True),
    "bf16-true": (2, 2, False),
    "16-true": (2, 2, False),
}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that activation memory depends on.

    ``intermediate_size`` is one MLP's (one expert's for MoE families);
    ``experts_per_token`` experts run for each token; ``gated_mlp``: three
    matrices (gate, up, down) rather than two; ``rotary_dim``: the rotated part of a head.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    experts: int = 1
    experts_per_token: int = 1
    gated_mlp: bool = True
    rotary_dim: int | None = None

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """Read the sizes from a transformers config, through its family's adapter."""
        from clexlab.arch import architecture_of

        arch = architecture_of(config)
        experts, per_token = arch.experts(config)
        return cls(
            hidden_size=int(config.hidden_size),
            num_layers=int(config.num_hidden_layers),
            num_heads=int(config.num_attention_heads),
            num_kv_heads=arch.num_kv_heads(config),
            head_dim=arch.head_dim(config),
            intermediate_size=arch.intermediate_size(config),
            vocab_size=int(config.vocab_size),
            experts=experts,
            experts_per_token=per_token,
            gated_mlp=arch.gated_mlp(),
            rotary_dim=arch.rotary_dim(config),
        )


@dataclass(frozen=True)
class ParamCounts:
    """Parameter numbers of a causal LM (shared tensors counted once).

    ``layer``: one decoder layer (FSDP's unit of all-gather). ``root``: everything
    outside the layers and the ODE (embeddings, final norm, LM head). ``matmul``:
    weights of linear layers, the ones autocast copies to bf16. ``tensors``:
    trainable parameter tensors (one AdamW step counter each). ``active``: the
    parameters one token goes through (MoE: only ``experts_per_token`` of the experts).
    """

    total: int
    trainable: int
    ode: int
    ode_trainable: int
    layer: int
    root: int
    matmul: int
    tensors: int
    ode_tensors: int
    active: int = 0


def _expert_parameters(layer: nn.Module) -> int:
    """Parameters of a decoder layer that belong to its experts (MoE), 0 for a dense layer."""
    return sum(p.numel() for name, p in layer.named_parameters() if ".experts." in f".{name}")


def count_parameters(model: nn.Module) -> ParamCounts:
    """Count the parameters of a transformers causal LM (works on the meta device)."""
    from clexlab.arch import architecture_of

    arch = architecture_of(model)
    unique = {id(p): (name, p) for name, p in model.named_parameters(remove_duplicate=True)}
    params = list(unique.values())
    ode_ids = {id(p) for p in arch.rotary(model).parameters()}
    ode = [(n, p) for n, p in params if id(p) in ode_ids]
    layers = arch.layers(model)
    layer = sum(p.numel() for p in layers[0].parameters()) if len(layers) else 0
    matmul_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    # Fused expert weights ([experts, out, in] tensors) are matmul weights too.
    matmul_ids |= {id(p) for l in layers for n, p in l.named_parameters() if ".experts." in f".{n}"}
    total = sum(p.numel() for _, p in params)
    ode_total = sum(p.numel() for _, p in ode)
    experts, per_token = arch.experts(model.config)
    inactive = sum(_expert_parameters(l) for l in layers) * (experts - per_token) // experts
    return ParamCounts(
        total=total,
        trainable=sum(p.numel() for _, p in params if p.requires_grad),
        ode=ode_total,
        ode_trainable=sum(p.numel() for _, p in ode if p.requires_grad),
        layer=layer,
        root=total - ode_total - layer * len(layers),
        matmul=sum(p.numel() for _, p in params if id(p) in matmul_ids),
        tensors=sum(1 for _, p in params if p.requires_grad),
        ode_tensors=sum(1 for _, p in ode if p.requires_grad),
        active=total - inactive,
    )


@dataclass(frozen=True)
class StepSetup:
    """How one training step runs.

    Args:
        seq_len: tokens per sequence (CLEX trains at L with sampled positions).
        batch: sequences per micro-batch on one GPU.
        precision: a Lightning precision flag (see :data:`PRECISIONS`).
        shards: GPUs the weights, gradients and optimizer state are sharded over
            (FSDP); 1 when every GPU holds a replica (DDP, single device).
        gradient_checkpointing: recompute each layer in backward.
        attn_implementation: ``sdpa`` / ``flash_attention_*`` (no N x N kept) or ``eager``.
        trainable_rope: the rotary angles need gradients (CLEX with a trainable ODE).
        loss_chunk: positions the loss projects to the vocabulary at a time.
        gathered_layers: decoder layers FSDP holds unsharded at once (the one
            computing and the one prefetched).
        fsdp: sharded with FSDP2 (clexlab's ``trainer=fsdp``), which gathers in the
            compute dtype under mixed precision; None: whenever ``shards > 1``
            (``True`` with ``shards=1`` is FSDP on one GPU).
    """

    seq_len: int
    batch: int
    precision: str = "32-true"
    shards: int = 1
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    trainable_rope: bool = True
    loss_chunk: int = 1024
    gathered_layers: int = 2
    fsdp: bool | None = None

    @property
    def sharded(self) -> bool:
        """Whether FSDP2 holds the weights (and all-gathers them)."""
        return self.shards > 1 if self.fsdp is None else bool(self.fsdp)

    @property
    def gathered_in_compute_dtype(self) -> bool:
        """FSDP2 with a mixed precision policy: bf16/fp16 units over float32 shards."""
        return self.sharded and _sizes(self.precision)[2]

    @property
    def eager(self) -> bool:
        """Whether attention materialises [B, H, N, N] probabilities."""
        return self.attn_implementation == "eager"


@dataclass(frozen=True)
class Activations:
    """Activation bytes of one step on one GPU."""

    layer: int  # one decoder layer, everything it keeps for backward
    kept: int  # held from the end of the forward into the backward
    transient: int  # the largest short-lived extra on top (recompute, loss chunk, mask)
    transient_what: str


def _sizes(precision: str) -> tuple[int, int, bool]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not planned; choose one of {list(PRECISIONS)}")
    return PRECISIONS[precision]


def _compute(setup: StepSetup) -> tuple[int, int, int, bool]:
    """``(s, c, r, casts)``: stored, matmul and residual bytes, and whether autocast copies weights.

    Under FSDP with a mixed precision policy the gathered weights are already
    in c bytes: autocast casts nothing and the residual stream is c bytes too.
    """
    s, c, autocast = _sizes(setup.precision)
    if setup.gathered_in_compute_dtype:
        return s, c, c, False
    return s, c, s, autocast


def dtype_name(nbytes: int, precision: str) -> str:
    """``fp32``, or the 2-byte dtype of ``precision`` (``fp16`` for the ``16-*`` flags, else ``bf16``)."""
    if nbytes == 4:
        return "fp32"
    return "fp16" if precision.startswith("16") else "bf16"


def activation_bytes(shape: ModelShape, setup: StepSetup) -> Activations:
    """What the forward keeps for backward, and the largest transient on top of it."""
    # The residual stream: float32 under autocast (fp32 embeddings + bf16 branch -> fp32),
    # bf16 when FSDP gathers bf16 weights (bf16 embeddings and norms); ``casts``: autocast
    # re-casts the inputs of the projections and the LM head.
    _, c, r, casts = _compute(setup)
    B, N = setup.batch, setup.seq_len
    h, I, V = shape.hidden_size, shape.intermediate_size, shape.vocab_size
    H, hd = shape.num_heads, shape.head_dim
    kv = shape.num_kv_heads * hd
    bn = B * N

    norm = (4 + r) * bn * h + 4 * bn  # float32 input, rsqrt, normalised input
    # One cast per projection under autocast (q, k, v; gate and up, or fc1 only).
    attn_in, mlp_in = (3 * c, (2 if shape.gated_mlp else 1) * c) if casts else (r, r)
    # Gated: gate, act(gate), up and their product; ungated: fc1 and act(fc1). MoE: every token
    # passes experts_per_token experts, plus its float32 router logits.
    mlp = (4 if shape.gated_mlp else 2) * c * bn * I * shape.experts_per_token
    if shape.experts > 1:
        mlp += 4 * bn * shape.experts
    rotated = r * (bn * h + bn * kv) if setup.trainable_rope else 0  # what the fused CLEX rotary saves
    if setup.eager:
        # q, k, v are copied into the layouts the two matmuls need (and k, v repeated to H heads),
        # so the rotated q and k are never the saved tensors themselves.
        attention = 4 * c * bn * h + (4 + (c if c != 4 else 0)) * B * H * N * N
        rope = rotated
    else:
        attention = c * (2 * bn * h + 2 * bn * kv) + 4 * B * H * N
        rope = rotated if r != c else 0  # SDPA saves the rotated q, k themselves unless autocast recasts them
    layer = 2 * norm + attn_in * bn * h + mlp_in * bn * h + attention + rope + mlp

    # Outside the layers: token ids (int64), one row of positions and its cos/sin
    # (the batch shares it), the final norm, and the final hidden states the chunked loss keeps.
    outside = 8 * bn + 4 * N + 2 * r * N * (shape.rotary_dim or hd) + norm + r * bn * h
    layers_kept = shape.num_layers * (r * bn * h if setup.gradient_checkpointing else layer)
    kept = layers_kept + outside

    chunk = B * min(setup.loss_chunk, N) * V
    # Backward of one loss chunk: float32 log-probs (recomputed), their gradient and the
    # logits' gradient, plus the c-byte logits; autocast recasts the LM head for the recompute.
    loss = chunk * (12 + (c if c != 4 else 0)) + (c * V * h if casts else 0)
    working = 4 * bn * (2 * h + I * shape.experts_per_token)  # gradients in flight through one layer
    mask = r * B * N * N if setup.eager else 0  # eager's additive [B, 1, N, N] causal mask
    if setup.gradient_checkpointing:
        candidates = {"one layer's recompute": layer + working + mask, "one loss chunk": loss + mask}
    else:
        candidates = {"one loss chunk": loss, "layer gradients in flight": working + mask}
    what = max(candidates, key=candidates.get)
    return Activations(layer=layer, kept=kept, transient=candidates[what], transient_what=what)


@dataclass(frozen=True)
class Item:
    """One line of a memory plan."""

    key: str
    label: str
    bytes: int


@dataclass
class MemoryPlan:
    """Per-GPU bytes of one training step, line by line (see :func:`plan_memory`)."""

    setup: StepSetup
    counts: ParamCounts
    items: list[Item] = field(default_factory=list)
    ode_optimizer: int = 0
    activations: Activations | None = None

    def __getitem__(self, key: str) -> int:
        return next((item.bytes for item in self.items if item.key == key), 0)

    @property
    def total(self) -> int:
        """The step's peak on one GPU: every line, except that with gradient checkpointing
        under autocast the weight copies (end of forward) and the backward transient
        never coexist, so only the larger counts."""
        total = sum(item.bytes for item in self.items)
        if self.setup.gradient_checkpointing and self["compute_copies"]:
            total -= min(self["compute_copies"], self["transient"])
        return total


def plan_memory(shape: ModelShape, counts: ParamCounts, setup: StepSetup) -> MemoryPlan:
    """Per-GPU memory of one training step with AdamW.

    Lines (``plan[key]``): ``weights`` (stored: float32 master weights unless
    ``*-true`` half precision), ``gradients``, ``optimizer`` (two AdamW states in
    the weights' dtype + a step counter per tensor; ``plan.ode_optimizer`` is the
    CLEX ODE's share), ``compute_copies`` (without FSDP, under autocast: a bf16
    copy of every linear weight, kept from its first use to the end of the
    forward), ``gathered`` (FSDP: the root's embeddings/norm/LM head,
    ``gathered_layers`` decoder layers, in the compute dtype under mixed
    precision, and one layer's unsharded gradients in float32 for the
    reduce-scatter, or in the stored dtype), ``activations`` and ``transient``.

    Sharding follows :mod:`clexlab.models.sharding`: FSDP2 units are the decoder
    layers and the root; the CLEX ODE stays replicated (and float32) on every
    rank. Under ``bf16-mixed``/``16-mixed`` FSDP2 gathers bf16/fp16 over float32
    shards, so autocast makes no weight copies (no ``compute_copies`` line).
    """
    s, c, r, casts = _compute(setup)
    n = max(int(setup.shards), 1)
    autocast = _sizes(setup.precision)[2]

    def dtype(nbytes: int) -> str:
        return dtype_name(nbytes, setup.precision)

    shard = f", 1/{n} shard" if n > 1 else ""
    acts = activation_bytes(shape, setup)

    def spread(numel: int, ode: int) -> int:
        # Elements one GPU holds: the sharded part over n, the (replicated) ODE whole.
        return (numel - ode) // n + ode if n > 1 else numel

    weights = s * spread(counts.total, counts.ode)
    trainable = spread(counts.trainable, counts.ode_trainable)
    items = [
        Item("weights", f"weights ({dtype(s)}{' master' if autocast else ''}{shard})", weights),
        Item("gradients", f"gradients ({dtype(s)}{shard})", s * trainable),
        Item(
            "optimizer",
            f"optimizer (AdamW, {OPTIMIZER_STATES} {dtype(s)} states{shard})",
            OPTIMIZER_STATES * s * trainable + STEP_BYTES * counts.tensors,
        ),
    ]
    transient, what = acts.transient, acts.transient_what
    if casts:
        copies = c * counts.matmul
        if setup.gradient_checkpointing:
            # The cached copies die when the forward leaves autocast, before any recompute;
            # only the larger of the two is ever resident. The recompute casts its own layer again.
            if what == "one layer's recompute":
                transient += c * counts.layer
            label = f"{dtype(c)} weight copies (autocast cache, freed after forward)"
        else:
            label = f"{dtype(c)} weight copies (autocast, kept for backward)"
        items.append(Item("compute_copies", label, copies))
    if setup.sharded:
        # Gathered in the compute dtype under a mixed precision policy, else as stored; one
        # layer's unsharded gradients in the dtype they are reduce-scattered in (float32 then).
        g = c if setup.gathered_in_compute_dtype else s
        grads = 4 if setup.gathered_in_compute_dtype else s
        unsharded = g * (counts.root + setup.gathered_layers * counts.layer) + grads * counts.layer
        label = f"all-gathered {dtype(g)}: emb/norm/head + {setup.gathered_layers} layers, 1 layer's {dtype(grads)} grads"
        items.append(Item("gathered", label, unsharded))
    gc = "gradient checkpointing" if setup.gradient_checkpointing else "no checkpointing"
    items.append(Item("activations", f"activations kept for backward ({gc})", acts.kept))
    items.append(Item("transient", f"backward transient: {what}", transient))
    ode_optimizer = OPTIMIZER_STATES * s * counts.ode_trainable + STEP_BYTES * counts.ode_tensors
    return MemoryPlan(setup=setup, counts=counts, items=items, ode_optimizer=ode_optimizer, activations=acts)
