"""LightningModule: a transformers causal LM trained with a RoPE extension method."""

from __future__ import annotations

import contextlib
from typing import Any

import lightning as L
import torch
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from clexlab.curriculum import ContiguousPositions, ScaleCurriculum, UniformScaleCurriculum
from clexlab.models.builder import build_model
from clexlab.models.loss import causal_lm_nll
from clexlab.rope import CLEXRotaryEmbedding, find_rotary
from clexlab.rope.factory import install_rope, method_label

class LongContextLM(L.LightningModule):
    """Next-token training of a causal LM whose RoPE is extended by ``rope``.

    Args:
        model: the ``model`` config node (sizes or a local ``path``).
        rope: the ``rope`` config node (``name``: clex, none, pi, ntk, dynamic_ntk,
            yarn; ``factor`` and options for the baselines), or just the name.
        clex: the ``clex`` config node (max_scale, param_factor, act, time_dt, lr, freeze, ...).
        optim: ``lr``, ``weight_decay``, ``betas``, ``warmup_steps``, ``min_lr_ratio``.
        vocab_size: tokenizer vocabulary (used for models built in code).
        seed: seeds the curriculum; every rank draws the same t from ``(seed, step)``.
        train: ``position_sampling`` (None = the method's default: on for CLEX,
            off otherwise) and ``sampling_max_scale`` (t_max of the positions
            drawn for non-CLEX methods).
        data: the data config trained on, kept in the checkpoint so ``eval.py``
            scores the same held-out split.
        load_weights: read pretrained weights from ``model.path`` (off when a
            checkpoint is about to overwrite them anyway).
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["load_weights"])
        self.train_length = int(model["train_length"])
        rope = {"name": rope} if isinstance(rope, str) else dict(rope)
        train = train or {}
        self.model = build_model(model, vocab_size, load_weights=load_weights)
        install_rope(self.model, rope, self.train_length, clex)
        sampling = train.get("position_sampling")
        self.position_sampling = (rope["name"] == "clex") if sampling is None else bool(sampling)
        self.method = method_label(rope, clex, self.position_sampling)
        self.curriculum = self._curriculum(rope["name"], clex, train, seed)

    def _curriculum(self, name: str, clex: dict[str, Any], train: dict[str, Any], seed: int) -> ScaleCurriculum:
        if name == "clex":
            # CLEX always draws t (its frequencies depend on it); positions are spread unless disabled.
            return UniformScaleCurriculum(clex["max_scale"], seed=seed, spread_positions=self.position_sampling)
        if self.position_sampling:
            # Any other method: the same random positions over t*L (PoSE / RandomPos style).
            return UniformScaleCurriculum(int(train.get("sampling_max_scale") or clex["max_scale"]), seed=seed)
        return ContiguousPositions()

    @property
    def clex_rope(self) -> CLEXRotaryEmbedding | None:
        """The CLEX rotary module, or None when the model uses another RoPE."""
        rotary = find_rotary(self.model)
        return rotary if isinstance(rotary, CLEXRotaryEmbedding) else None

    def _scale(self, t: int):
        rope = self.clex_rope
        return rope.use_scale(t) if rope is not None else contextlib.nullcontext()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        input_ids, labels = batch["input_ids"], batch["labels"]
        draw = self.curriculum.sample(self.global_step, input_ids.shape[1])
        positions = draw.positions.to(self.device).unsqueeze(0).expand_as(input_ids)
        with self._scale(draw.t):
            nll, count = causal_lm_nll(self.model, input_ids, labels, positions)
        loss = nll / count.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/scale_t", float(draw.t))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        nll, count = causal_lm_nll(self.model, batch["input_ids"], batch["labels"])
        self.log("val/loss", nll / count.clamp(min=1), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optim, clex = self.hparams.optim, self.hparams.clex
        ode, decay, no_decay = [], [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if ".rotary_emb." in name:
                ode.append(param)
            elif param.ndim < 2:
                no_decay.append(param)
            else:
                decay.append(param)
        groups = [
            {"params": decay, "weight_decay": optim["weight_decay"], "lr": optim["lr"]},
            {"params": no_decay, "weight_decay": 0.0, "lr": optim["lr"]},
        ]
        if ode:
            # The ODE needs its own (much smaller) learning rate: at the model's
            # lr the frequencies drift toward interpolation and extrapolation fails.
            groups.append({"params": ode, "weight_decay": 0.0, "lr": clex["lr"]})
        optimizer = torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]))
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        # Warmup, then cosine decay to min_lr_ratio x each group's own lr.
        scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            optimizer, optim["warmup_steps"], total, min_lr_rate=float(optim.get("min_lr_ratio", 0.0))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
