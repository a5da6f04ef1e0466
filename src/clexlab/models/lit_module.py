"""LightningModule: a transformers causal LM trained with a RoPE extension method."""

from __future__ import annotations

import functools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from clexlab.curriculum import ScaleSample, curriculum_for_method
from clexlab.models import sharding
from clexlab.models.builder import build_model
from clexlab.models.loss import causal_lm_nll
from clexlab.rope import CLEXRotaryEmbedding, find_rotary
from clexlab.rope.methods import method_from_config

# The chunked loss, registered on the sharded model as a forward method (see clexlab.models.sharding).
NLL_METHOD = "clexlab_nll"


class LongContextLM(L.LightningModule):
    """Next-token training of a causal LM whose RoPE is extended by ``rope``.

    Multi-process training goes through Lightning's strategies
    (``conf/trainer/ddp.yaml``, ``conf/trainer/fsdp.yaml``). Under
    ``ModelParallelStrategy``, :meth:`configure_model` applies FSDP2 (see
    :mod:`clexlab.models.sharding`); the CLEX ODE stays replicated and its
    gradients are averaged here before each optimizer step.

    Args:
        model: the ``model`` config node (family ``arch`` and sizes, or a local ``path``).
        rope: the ``rope`` config node (``_target_``: the method's class, ``name``,
            ``factor`` and the method's options), or just the method's name.
        clex: the ``clex`` config node (max_scale, param_factor, act, time_dt, lr, freeze, ...).
        optim: ``lr``, ``weight_decay``, ``betas``, ``warmup_steps``, ``min_lr_ratio``.
        vocab_size: tokenizer vocabulary (used for models built in code).
        seed: seeds the curriculum; every rank draws the same t from ``(seed, step)``.
        train: ``position_sampling`` (None = the method's default: on for CLEX,
            off otherwise) and ``sampling_max_scale`` (t_max of the positions
            drawn for methods without a t_max of their own).
        data: the data config trained on, kept in the checkpoint so ``eval.py``
            scores the same held-out split.
        load_weights: read pretrained weights from ``model.path`` (off when a
            checkpoint is about to overwrite them anyway).
        curriculum: the ``curriculum`` config node (``_target_`` + options);
            None: the paper's uniform curriculum.
    """

    def __init__(
        self,
        model: dict[str, Any],
        rope: str | dict[str, Any],
        clex: dict[str, Any],
        optim: dict[str, Any],
        vocab_size: int,
        seed: int = 0,
        train: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        load_weights: bool = True,
        curriculum: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_weights"])
        self.train_length = int(model["train_length"])
        train = train or {}
        self.rope_method = method_from_config(rope, {"clex": clex})
        self.model = build_model(model, vocab_size, load_weights=load_weights)
        self.rope_method.install(self.model, self.train_length)
        sampling = train.get("position_sampling")
        self.position_sampling = self.rope_method.samples_positions if sampling is None else bool(sampling)
        self.method = self.rope_method.label(self.position_sampling)
        # t_max: the method's own (CLEX refuses a larger t), else train.sampling_max_scale.
        self.curriculum = curriculum_for_method(
            curriculum, self.rope_method, seed=seed, position_sampling=self.position_sampling,
            sampling_max_scale=train.get("sampling_max_scale") or clex.get("max_scale"),
        )
        if self.curriculum.tag():  # e.g. clex+pose2: runs under different curricula get their own rows
            self.method = f"{self.method}+{self.curriculum.tag()}"
        self.last_draw: ScaleSample | None = None  # the curriculum's draw of the current step
        self._replicated: list[nn.Parameter] = []  # parameters left out of FSDP: grads averaged by hand
        self._sharded_nll = None  # under FSDP: the loss registered on the sharded model as a forward method

    @property
    def clex_rope(self) -> CLEXRotaryEmbedding | None:
        """The CLEX rotary module, or None when the model uses another RoPE."""
        rotary = find_rotary(self.model)
        return rotary if isinstance(rotary, CLEXRotaryEmbedding) else None

    def rope_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters of the RoPE method (the CLEX ODE; none for the other methods)."""
        return self.rope_method.trainable_parameters(self.model)

    # ------------------------------------------------------------ parallelism
    def configure_model(self) -> None:
        """Shard with FSDP2 under ``ModelParallelStrategy``; keep float32 master weights under mixed precision.

        Lightning calls this on every rank before the optimizers exist (and
        again for a later ``validate``/``test``, hence the guard). Under
        ``bf16-mixed``/``16-mixed`` FSDP2 gathers and computes in bf16/fp16 over
        the float32 shards (``sharding.mixed_precision_policy``), so autocast
        keeps no copies of the gathered weights.
        """
        trainer = self._trainer
        if trainer is None:
            return
        strategy = trainer.strategy
        if isinstance(strategy, ModelParallelStrategy) and not sharding.is_sharded(self.model):
            mesh = sharding.data_parallel_mesh(strategy.root_device)
            # The CLEX ODE stays whole on every rank, and float32 (see clexlab.models.sharding for why).
            self._replicated = sharding.shard_model(
                self.model,
                mesh,
                keep_replicated=self.rope_parameters(),
                forward_methods={NLL_METHOD: functools.partial(causal_lm_nll, self.model)},
                mp_policy=sharding.mixed_precision_policy(str(trainer.precision)),
            )
            self._sharded_nll = getattr(self.model, NLL_METHOD)
        if "mixed" in str(trainer.precision):
            # A model loaded in bf16 would otherwise train bf16 weights under autocast.
            # After sharding, each rank upcasts only its own shard. (FSDP2 reads the
            # shards' dtype for its policy at the first forward, so it sees float32.)
            sharding.upcast_low_precision(self.model)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        rope = self.rope_parameters()
        if rope and self.last_draw is not None and self.last_draw.t == 1:
            # t = 1 had the ODE in the graph only through the zero-weight term of
            # training_step: its gradient is exactly zero. Drop it, so AdamW leaves
            # the ODE and its moments alone, as a single-process run always has.
            for p in rope:
                p.grad = None
        elif self._replicated:
            sharding.all_reduce_grads(self._replicated)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        if not self._replicated or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        # Sharded (DTensor) and replicated (plain) gradients side by side: torch's
        # clip_grad_norm_ refuses the mix, so clip by the same global norm here.
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            sharding.clip_grad_value_mixed(params, float(gradient_clip_val))
        else:
            sharding.clip_grad_norm_mixed(params, float(gradient_clip_val))

    # --------------------------------------------------------------- steps
    def _nll(
        self, input_ids: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed next-token NLL and token count (through FSDP's hooks when sharded)."""
        if self._sharded_nll is not None:
            return self._sharded_nll(input_ids, labels, positions)
        return causal_lm_nll(self.model, input_ids, labels, positions)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        input_ids, labels = batch["input_ids"], batch["labels"]
        # Drawn from (seed, global_step) only: every rank gets the same t and positions
        # (the ranks differ in their batches, never in the scale).
        draw = self.last_draw = self.curriculum.sample(self.global_step, input_ids.shape[1])
        positions = draw.positions.to(self.device).unsqueeze(0).expand_as(input_ids)
        with self.rope_method.scale(self.model, draw.t):
            nll, count = self._nll(input_ids, labels, positions)
        loss = nll / count.clamp(min=1)
        rope = self.rope_parameters()
        if draw.t == 1 and rope:
            # At t = 1 CLEX returns the base frequencies: the ODE is not in the graph,
            # and DDP (find_unused_parameters=False) would fail on the next step waiting
            # for its gradients. A zero-weight term keeps it in the graph at the cost of
            # a sum over a few thousand numbers, instead of find_unused_parameters=True,
            # which walks the whole autograd graph on every step. The loss value is unchanged.
            loss = loss + 0.0 * sum(p.sum() for p in rope)
        # sync_dist: the mean over ranks, i.e. the loss of the global batch, comparable across world sizes.
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)
        self.log("train/scale_t", float(draw.t))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        nll, count = self._nll(batch["input_ids"], batch["labels"])
        self.log("val/loss", nll / count.clamp(min=1), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optim = self.hparams.optim
        ode = self.rope_parameters()
        own = {id(p) for p in ode}
        decay, no_decay = [], []
        for param in self.parameters():
            if not param.requires_grad or id(param) in own:
                continue
            if param.ndim < 2:
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"params": decay, "weight_decay": optim["weight_decay"], "lr": optim["lr"]},
            {"params": no_decay, "weight_decay": 0.0, "lr": optim["lr"]},
        ]
        if ode:
            # The method's own parameters (the CLEX ODE) in their own group, with its options (lr, no decay).
            groups.append({"params": ode, "weight_decay": optim["weight_decay"], "lr": optim["lr"], **self.rope_method.optimizer_options()})
        optimizer = torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        # Warmup, then cosine decay to min_lr_ratio x each group's own lr.
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, optim["warmup_steps"], total, min_lr_rate=float(optim.get("min_lr_ratio", 0.0))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
