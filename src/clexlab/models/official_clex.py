"""Load and write the format of the released CLEX models (e.g. CLEX-LLaMA-2-7B-16K).

A released CLEX directory is a LLaMA checkpoint whose ``config.json`` carries

    "rope_scaling": {"type": "clex", "max_factor": 16, "param_factor": 1, "act": "tanh", "factor": 1},
    "log_scale": true, "use_flashattn": true, "auto_map": {...remote code...}

and whose weights add the ODE as ``model.clex_layer.proj_func.ode_up_proj``
(``[d/2, p·d]``), ``model.clex_layer.proj_func.ode_down_proj`` (``[p·d, d/2]``)
and the starting frequencies ``model.clex_layer.inv_freq``. The released
modelling code needs ``trust_remote_code``; here no remote code runs: the CLEX
keys are stripped to build a plain transformers ``LlamaForCausalLM``, the
tensors are read with safetensors or ``torch.load(weights_only=True)``, and
clexlab's own :class:`~clexlab.rope.CLEXRotaryEmbedding` receives the two ODE
matrices, whose shapes are the released ones.

Differences from the released code, and why the numbers still agree:

* Train length L and ``t``: the released code uses ``max_position_embeddings``
  as L and ``t = ceil(n / L)`` clipped to ``max_factor`` — as clexlab does.
* NTK time embedding: the released ``ODELinear.get_time_embedding`` computes
  the NTK frequencies with base 10000 whatever the model's ``rope_theta``;
  clexlab's dynamics use the model's RoPE base. For LLaMA-2 (``rope_theta`` =
  10000) the two are identical; for a model with another base they differ.
* Starting frequencies: the released module builds ``inv_freq`` from its own
  ``base`` argument, not always ``rope_theta``; the saved buffer is the truth,
  so when its base disagrees with ``rope_theta`` the buffer's base is used.
* Solver: the released code integrates with torchdiffeq rk4 at ``time_dt``;
  clexlab's default fast solver stays within 1e-4 of it (``solver="rk4"``
  reproduces it exactly).
* ``log_scale``: the released code scales queries by ``log(n)/log(L)`` only in
  its flash-attention path, i.e. when ``use_flashattn`` is on; so does this loader.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clexlab.models.builder import DTYPES
from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.install import find_rotary, head_dim_of, install_clex, rope_base
from clexlab.rope.log_scale import NAME as LOG_SCALE_ATTN
from clexlab.rope.log_scale import enable_log_scale
from clexlab.utils.errors import UserError

log = logging.getLogger("clexlab")

PREFIX = "model.clex_layer."
UP, DOWN, INV_FREQ = PREFIX + "proj_func.ode_up_proj", PREFIX + "proj_func.ode_down_proj", PREFIX + "inv_freq"
# Keys of the released config that a plain LlamaConfig must not see.
OFFICIAL_KEYS = ("rope_scaling", "auto_map", "log_scale", "use_flashattn", "rope_parameters", "clexlab_tokenizer")
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt",
)


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a model directory as a dict (one-line error when unreadable)."""
    file = Path(path) / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {file}: {err}".splitlines()[0]) from err


def is_official_clex(config: dict[str, Any]) -> bool:
    """True for a config in the released CLEX format (``rope_scaling.type == "clex"``)."""
    scaling = config.get("rope_scaling") or {}
    return isinstance(scaling, dict) and (scaling.get("type") or scaling.get("rope_type")) == "clex"


def load_weight_files(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a directory's weights: ``*.safetensors``, else ``pytorch_model*.bin`` (weights only)."""
    path = Path(path)
    safetensors = sorted(path.glob("*.safetensors"))
    bins = sorted(p for p in path.glob("pytorch_model*.bin"))
    if not safetensors and not bins:
        raise UserError(f"{path} holds no *.safetensors or pytorch_model*.bin weights")
    state: dict[str, torch.Tensor] = {}
    if safetensors:
        from safetensors.torch import load_file

        for file in safetensors:
            state.update(load_file(str(file)))
        return state
    for file in bins:
        try:
            state.update(torch.load(file, map_location="cpu", weights_only=True, mmap=True))
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def _base_of(inv_freq: torch.Tensor, head_dim: int) -> float:
    """The RoPE base that produced ``inv_freq = base^(-2i/d)`` (read off i = 1)."""
    return math.exp(-math.log(float(inv_freq[1])) * head_dim / 2)


def load_official_clex(
    path: str | Path,
    dtype: str | torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    solver: str = "fast",
    train_length: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A transformers ``LlamaForCausalLM`` with clexlab's CLEX holding the released ODE weights.

    Args:
        path: a released-format CLEX directory.
        dtype: dtype of the transformer weights (the ODE always stays float32);
            ``"auto"`` keeps the dtype the weight files hold.
        attn_implementation: transformers attention implementation.
        solver: clexlab CLEX solver (``"fast"`` or ``"rk4"`` for the released integrator).
        train_length: override of L (default: ``max_position_embeddings``).

    Returns:
        ``(model, info)`` with ``info`` = train length, ``max_scale``, ``log_scale``, base, ...

    Raises:
        UserError: for a non-LLaMA or non-CLEX config, or weights that do not fit.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    raw = read_config(path)
    if not is_official_clex(raw):
        raise UserError(f"{path}/config.json has no rope_scaling of type 'clex': not a released CLEX model")
    if raw.get("model_type", "llama") != "llama":
        raise UserError(f"{path} holds a {raw.get('model_type')!r} CLEX model; clexlab loads LLaMA-family CLEX models only")
    scaling = raw["rope_scaling"]
    clean = {k: v for k, v in raw.items() if k not in OFFICIAL_KEYS}
    clean["architectures"] = ["LlamaForCausalLM"]
    theta = float(raw.get("rope_theta", 10000.0))
    clean["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    clean.pop("rope_theta", None)
    config = LlamaConfig.from_dict(clean)
    config._attn_implementation = attn_implementation

    state = load_weight_files(path)
    missing_ode = [k for k in (UP, DOWN) if k not in state]
    if missing_ode:
        raise UserError(f"{path} weights lack the CLEX ODE ({', '.join(missing_ode)})")
    up, down = state.pop(UP).float(), state.pop(DOWN).float()
    inv_freq = state.pop(INV_FREQ, None)
    head_dim = head_dim_of(config)
    if inv_freq is not None:
        base = _base_of(inv_freq.float(), head_dim)
        if abs(base - theta) > 1e-3 * theta:
            log.warning("clex_layer.inv_freq was built with base %.6g, not rope_theta %.6g: using the buffer's", base, theta)
            config.rope_parameters["rope_theta"] = base
    # Old LLaMA checkpoints saved every layer's rotary inv_freq; clexlab replaces that module.
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq") and not k.startswith(PREFIX)}

    # Built on the meta device: a 7B model is never randomly initialised only to be overwritten.
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    expected = set(model.state_dict())
    unexpected = sorted(set(state) - expected)
    if unexpected:
        raise UserError(f"{path} weights do not fit a LlamaForCausalLM: unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied: the output projection is the embedding
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    missing = sorted(k for k, v in model.state_dict().items() if v.is_meta and "rotary_emb" not in k)
    if missing:
        raise UserError(f"{path} weights lack {len(missing)} tensors, e.g. {missing[:3]}")
    if dtype != "auto":
        model = model.to(DTYPES[dtype] if isinstance(dtype, str) else dtype)

    length = int(train_length or raw.get("max_position_embeddings"))
    rope = install_clex(
        model,
        train_length=length,
        max_scale=int(scaling["max_factor"]),
        param_factor=int(scaling.get("param_factor", 1)),
        act=str(scaling.get("act", "tanh")),
        time_dt=float(scaling.get("time_dt", 0.01)),
        solver=solver,
    )
    if rope.dynamics.up_proj.shape != up.shape or rope.dynamics.down_proj.shape != down.shape:
        raise UserError(
            f"{path}: ODE shapes {tuple(up.shape)}/{tuple(down.shape)} do not match head_dim {head_dim} "
            f"and param_factor {scaling.get('param_factor', 1)}"
        )
    with torch.no_grad():
        rope.dynamics.up_proj.copy_(up)
        rope.dynamics.down_proj.copy_(down)
    log_scale = bool(raw.get("log_scale", False)) and raw.get("use_flashattn", True) is not False
    if log_scale:
        enable_log_scale(model, length)
    model.eval()
    info = {
        "train_length": length,
        "max_scale": rope.max_scale,
        "param_factor": int(scaling.get("param_factor", 1)),
        "act": rope.dynamics.act_name,
        "time_dt": rope.time_dt,
        "log_scale": log_scale,
        "rope_theta": rope.dynamics.base,
        "tokenizer": raw.get("clexlab_tokenizer", "hf"),
    }
    return model, info


def export_official_clex(
    model: nn.Module,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    byte_tokenizer: bool = False,
) -> Path:
    """Write a clexlab CLEX model in the released CLEX format (``config.json`` + ``model.safetensors``).

    The config gets ``rope_scaling`` (``type clex``, ``max_factor`` = t_max,
    ``param_factor``, ``act``, ``factor`` 1, ``time_dt``), ``log_scale``,
    ``use_flashattn`` and ``max_position_embeddings`` = L; the weights get the
    ODE under the released names and ``model.clex_layer.inv_freq``. No
    ``auto_map`` is written because no modelling code is shipped: to run the
    directory with the released code, copy its configuration/modelling files
    beside ``config.json`` and add their ``auto_map``. clexlab reads it back
    with :func:`load_official_clex`.

    Args:
        model: a transformers LLaMA with :func:`clexlab.rope.install_clex` applied.
        out_dir: the directory to write (created).
        tokenizer_dir: a directory whose tokenizer files are copied along.
        byte_tokenizer: mark the model as using clexlab's byte tokenizer (no files).

    Returns:
        ``out_dir``.
    """
    rope = find_rotary(model)
    if not isinstance(rope, CLEXRotaryEmbedding):
        raise UserError("only CLEX models export to the released CLEX format (this model's RoPE is not CLEX)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    for key in (*OFFICIAL_KEYS, "rope_theta", "clex_base_attn_implementation", "clex_log_scale_length"):
        config.pop(key, None)
    log_scale = getattr(model.config, "_attn_implementation", None) == LOG_SCALE_ATTN
    config.update(
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        rope_theta=rope_base(model.config),
        max_position_embeddings=rope.train_length,
        rope_scaling={
            "type": "clex",
            "max_factor": rope.max_scale,
            "param_factor": rope.dynamics.up_proj.shape[1] // rope.head_dim,
            "act": rope.dynamics.act_name,
            "factor": 1,
            "time_dt": rope.time_dt,
        },
        log_scale=log_scale,
        use_flashattn=True,
    )
    if byte_tokenizer:
        config["clexlab_tokenizer"] = "bytes"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if "rotary_emb." not in k and not (tied and k == "lm_head.weight")
    }
    state[UP] = rope.dynamics.up_proj.detach().float().cpu().contiguous()
    state[DOWN] = rope.dynamics.down_proj.detach().float().cpu().contiguous()
    state[INV_FREQ] = rope.log_inv_freq0.detach().double().exp().float().cpu()
    from safetensors.torch import save_file

    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy2(Path(tokenizer_dir) / name, out / name)
    return out
