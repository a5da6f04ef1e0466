"""Load and write the format of the released CLEX models (LLaMA-2, Phi-2 and Mixtral releases).

A released CLEX directory (DAMO-NLP-SG/CLEX: CLEX-LLaMA-2-7B-16K,
CLEX-Phi-2-32K, CLEX-Mixtral-8x7B-32K, ...) is a checkpoint of its family whose
``config.json`` carries

    "rope_scaling": {"type": "clex", "max_factor": 16, "param_factor": 1, "act": "tanh", "factor": 1},
    "log_scale": true, "use_flashattn": true, "auto_map": {...remote code...}

and whose weights add the ODE as ``model.clex_layer.proj_func.ode_up_proj``
(``[d/2, p·d]``), ``model.clex_layer.proj_func.ode_down_proj`` (``[p·d, d/2]``)
and the starting frequencies ``model.clex_layer.inv_freq``, d being the rotary
dimension (Phi-2 rotates ``partial_rotary_factor`` = 0.4 of each head, so its
ODE is 32-wide). The released modelling code needs ``trust_remote_code``; here
no remote code runs: the CLEX keys are stripped from the config, transformers'
own class of the family is built and filled by transformers' own loader
(``from_pretrained`` with that config: shards, dtypes and the conversion of
older weight names such as Mixtral's ``block_sparse_moe.experts.*.w1`` are
transformers'), and clexlab's :class:`~clexlab.rope.CLEXRotaryEmbedding`
receives the two ODE matrices, whose shapes are the released ones.

How the numbers agree with the released code:

* Train length L and ``t``: the released code uses ``max_position_embeddings``
  as L and ``t = ceil(n / L)`` clipped to ``max_factor`` — as clexlab does.
* NTK time embedding: the released ``ODELinear.get_time_embedding`` computes
  the NTK frequencies with base 10000 whatever the model's ``rope_theta`` (1e6
  for Mixtral); the loader gives clexlab's dynamics that same embedding
  (``embedding_log_inv_freq``), so the ODE sees the inputs it was trained on.
* Starting frequencies: the released module builds ``inv_freq`` from its own
  ``base`` argument, not always ``rope_theta``; the saved buffer is the truth,
  so when its base disagrees with ``rope_theta`` the buffer's base is used.
* Solver: the released code integrates with torchdiffeq rk4 at ``time_dt``;
  clexlab's default fast solver stays within 1e-4 of it (``solver="rk4"``
  reproduces it exactly).
* ``log_scale``: the released code scales queries by ``log(n)/log(L)`` only in
  its flash-attention path, i.e. when ``use_flashattn`` is on; so does this loader.

Export writes the same format for any supported family: the weights through
transformers' ``save_pretrained`` (which writes the names the released code
reads, e.g. Mixtral's per-expert ``w1``/``w2``/``w3``) plus the ODE tensors, and
the config with the CLEX keys. A model whose own RoPE is not plain (Llama-3.1's
``llama3``) also records it as ``clexlab_base_rope_parameters``, and
``clexlab_time_embedding: model`` records that the ODE embeds time with the
model's own frequencies (clexlab's convention); clexlab reads both back, the
released code ignores them (for plain RoPE of base 10000 the two conventions
agree).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clexlab.arch import architecture_of, get_architecture
from clexlab.models.builder import DTYPES
from clexlab.rope.clex import CLEXRotaryEmbedding
from clexlab.rope.install import install_clex
from clexlab.rope.log_scale import NAME as LOG_SCALE_ATTN
from clexlab.rope.log_scale import enable_log_scale
from clexlab.rope.ntk import rope_log_inv_freq
from clexlab.utils.errors import UserError, describe, hf_config_errors, torch_load_errors, weights_errors
from clexlab.utils.json_files import read_json_object

log = logging.getLogger("clexlab")

PREFIX = "model.clex_layer."
UP, DOWN, INV_FREQ = PREFIX + "proj_func.ode_up_proj", PREFIX + "proj_func.ode_down_proj", PREFIX + "inv_freq"
# Keys of the released config that transformers' own config class must not see.
OFFICIAL_KEYS = ("rope_scaling", "auto_map", "log_scale", "use_flashattn", "rope_parameters", "clexlab_tokenizer")
#: The base of the released code's NTK time embedding (ODELinear.get_time_embedding's default).
RELEASED_EMBEDDING_BASE = 10000.0
#: Written by clexlab's export when the ODE embeds time with the model's own frequencies (clexlab's
#: convention, which equals the released one for plain RoPE of base 10000 up to float32 rounding).
TIME_EMBEDDING_KEY = "clexlab_time_embedding"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt",
)


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a model directory as a dict (one-line error when unreadable)."""
    return read_json_object(Path(path) / "config.json", "it must be the model's JSON config")


def is_official_clex(config: dict[str, Any]) -> bool:
    """True for a config in the released CLEX format (``rope_scaling.type == "clex"``)."""
    scaling = config.get("rope_scaling") or {}
    return isinstance(scaling, dict) and (scaling.get("type") or scaling.get("rope_type")) == "clex"


def _base_of(inv_freq: torch.Tensor, rotary_dim: int) -> float:
    """The RoPE base that produced ``inv_freq = base^(-2i/d)`` (read off i = 1)."""
    return math.exp(-math.log(float(inv_freq[1])) * rotary_dim / 2)


def read_clex_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``model.clex_layer.*`` tensors of a directory's weights (only those are read)."""
    path = Path(path)
    found: dict[str, torch.Tensor] = {}
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        from safetensors import safe_open

        for file in safetensors:
            try:
                with safe_open(str(file), framework="pt") as f:
                    found.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)})
            except weights_errors() as err:
                raise UserError(f"{file} is damaged or truncated ({describe(err)}): copy or download it again") from err
        return found
    bins = sorted(path.glob("pytorch_model*.bin"))
    if not bins:
        raise UserError(f"{path} holds no *.safetensors or pytorch_model*.bin weights")
    for file in bins:
        state = _load_bin(file)
        found.update({k: v for k, v in state.items() if isinstance(k, str) and k.startswith(PREFIX)})
    return found


def _load_bin(file: Path) -> dict[str, Any]:
    """One ``pytorch_model*.bin`` shard (memory-mapped where the format allows), or a one-line error."""
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
            state = torch.load(file, map_location="cpu", weights_only=True)
    except torch_load_errors() as err:
        raise UserError(f"{file} is damaged, truncated or not a torch.save file ({describe(err)}): copy it again") from err
    if not isinstance(state, dict):
        raise UserError(f"{file} holds a {type(state).__name__}, not a state dict of weights")
    return state


def released_config(raw: dict[str, Any], attn_implementation: str):
    """transformers' own config of the released model's family, without the CLEX keys."""
    from transformers import AutoConfig

    arch = get_architecture(raw.get("model_type", "llama"))
    clean = {
        k: v for k, v in raw.items()
        if k not in OFFICIAL_KEYS and k not in ("model_type", "clexlab_base_rope_parameters", TIME_EMBEDDING_KEY)
    }
    theta = float(clean.pop("rope_theta", 10000.0))
    partial = clean.pop("partial_rotary_factor", None)
    params = dict(raw.get("clexlab_base_rope_parameters") or {"rope_type": "default"})
    params["rope_theta"] = theta
    if partial is not None:
        params["partial_rotary_factor"] = float(partial)
    attn = arch.attn_implementation(attn_implementation)
    return arch, AutoConfig.for_model(arch.model_type, **clean, rope_parameters=params, attn_implementation=attn)


def load_official_clex(
    path: str | Path,
    dtype: str | torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    solver: str = "fast",
    train_length: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """transformers' causal LM of the release's family with clexlab's CLEX holding the released ODE weights.

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
        UserError: for an unsupported family, a non-CLEX config, or weights that do not fit.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    path = Path(path)
    raw = read_config(path)
    if not is_official_clex(raw):
        raise UserError(f"{path}/config.json has no rope_scaling of type 'clex': not a released CLEX model")
    scaling = raw["rope_scaling"]
    try:  # transformers' validators, and the CLEX keys themselves
        arch, config = released_config(raw, attn_implementation)
        options = {"max_scale": int(scaling["max_factor"]), "param_factor": int(scaling.get("param_factor", 1)),
                   "act": str(scaling.get("act", "tanh")), "time_dt": float(scaling.get("time_dt", 0.01)),
                   "length": int(train_length or raw["max_position_embeddings"])}
    except hf_config_errors() as err:
        raise UserError(
            f"{path}/config.json is not a valid released CLEX config ({describe(err)}): fix that key "
            "(rope_scaling needs max_factor; max_position_embeddings, sizes and rope_theta must be numbers)"
        ) from err
    clex = read_clex_tensors(path)
    missing_ode = [k for k in (UP, DOWN) if k not in clex]
    if missing_ode:
        raise UserError(f"{path} weights lack the CLEX ODE ({', '.join(missing_ode)})")
    rotary_dim = arch.rotary_dim(config)
    if INV_FREQ in clex:
        theta = config.rope_parameters["rope_theta"]
        base = _base_of(clex[INV_FREQ].float(), rotary_dim)
        if abs(base - theta) > 1e-3 * theta:
            log.warning("clex_layer.inv_freq was built with base %.6g, not rope_theta %.6g: using the buffer's", base, theta)
            config.rope_parameters = {**config.rope_parameters, "rope_theta": base}

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the CLEX keys are "unexpected" to transformers: expected here
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(
            str(path), config=config, dtype="auto" if dtype == "auto" else (DTYPES[dtype] if isinstance(dtype, str) else dtype),
            local_files_only=True, trust_remote_code=False, output_loading_info=True,
            attn_implementation=arch.attn_implementation(attn_implementation),
        )
    except weights_errors() as err:
        raise UserError(
            f"{path}: transformers cannot load the weights ({describe(err)}): they are damaged, truncated or do not "
            "match config.json; copy them again"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
    unexpected = sorted(k for k in loading["unexpected_keys"] if not k.startswith(PREFIX) and "rotary_emb" not in k)
    if unexpected:
        raise UserError(f"{path} weights do not fit a {type(model).__name__}: unexpected {unexpected[:3]}")
    missing = sorted(k for k in loading["missing_keys"] if "rotary_emb" not in k)
    if missing:
        raise UserError(f"{path} weights lack {len(missing)} tensors, e.g. {missing[:3]}")

    length = options["length"]
    rope = install_clex(
        model,
        train_length=length,
        max_scale=options["max_scale"],
        param_factor=options["param_factor"],
        act=options["act"],
        time_dt=options["time_dt"],
        solver=solver,
        # The released ODE embeds time with the NTK frequencies of base 10000 (see the module docstring);
        # clexlab's own exports say when theirs is the model's own frequencies instead.
        embedding_log_inv_freq=None if raw.get(TIME_EMBEDDING_KEY) == "model"
        else rope_log_inv_freq(rotary_dim, RELEASED_EMBEDDING_BASE, torch.float64),
    )
    up, down = clex[UP].float(), clex[DOWN].float()
    if rope.dynamics.up_proj.shape != up.shape or rope.dynamics.down_proj.shape != down.shape:
        raise UserError(
            f"{path}: ODE shapes {tuple(up.shape)}/{tuple(down.shape)} do not match rotary dimension {rotary_dim} "
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
        "rope_theta": rope.own.base,
        "model_type": arch.model_type,
        "tokenizer": raw.get("clexlab_tokenizer", "hf"),
    }
    return model, info


def export_official_clex(
    model: nn.Module,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    byte_tokenizer: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a clexlab CLEX model in the released CLEX format (``config.json`` + ``model.safetensors``).

    The config gets ``rope_scaling`` (``type clex``, ``max_factor`` = t_max,
    ``param_factor``, ``act``, ``factor`` 1, ``time_dt``), ``rope_theta`` (and
    ``partial_rotary_factor`` for partial-rotary families), ``log_scale``,
    ``use_flashattn`` and ``max_position_embeddings`` = L; the weights get the
    ODE under the released names and ``model.clex_layer.inv_freq``. No
    ``auto_map`` is written because no modelling code is shipped: to run the
    directory with the released code, copy its configuration/modelling files
    beside ``config.json`` and add their ``auto_map``. clexlab reads it back
    with :func:`load_official_clex`.

    The directory is written whole or not at all (a temporary sibling, then a
    rename), and a directory that already holds files is refused unless
    ``overwrite`` is set: exporting "next to" a model never replaces it.

    Args:
        model: a transformers causal LM with :func:`clexlab.rope.install_clex` applied.
        out_dir: the directory to write.
        tokenizer_dir: a directory whose tokenizer files are copied along.
        byte_tokenizer: mark the model as using clexlab's byte tokenizer (no files).
        overwrite: replace a non-empty ``out_dir``.

    Returns:
        ``out_dir``.
    """
    arch = architecture_of(model)
    rope = arch.rotary(model)
    if not isinstance(rope, CLEXRotaryEmbedding):
        raise UserError("only CLEX models export to the released CLEX format (this model's RoPE is not CLEX)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file: choose a directory to export into")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        raise UserError(
            f"out={out} is not empty (it holds {', '.join(held[:3])}{', ...' if len(held) > 3 else ''}): "
            "choose a new directory, or pass overwrite=true to replace its contents"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write_release(model, arch, rope, tmp, tokenizer_dir, byte_tokenizer)
        if out.exists():
            shutil.rmtree(out)  # empty, or overwrite=true
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_release(model, arch, rope: CLEXRotaryEmbedding, out: Path, tokenizer_dir, byte_tokenizer: bool) -> None:
    prefix = arch.rotary_prefix(model)
    state = {k: v.detach() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    state[UP] = rope.dynamics.up_proj.detach().float().cpu().contiguous()
    state[DOWN] = rope.dynamics.down_proj.detach().float().cpu().contiguous()
    state[INV_FREQ] = rope.own.inv_freq.float().cpu()
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model.save_pretrained(str(out), state_dict=state, safe_serialization=True, max_shard_size="1000GB")
    finally:
        hf_logging.set_verbosity(verbosity)
    config = json.loads((out / "config.json").read_text())
    for key in (*OFFICIAL_KEYS, "rope_theta", "partial_rotary_factor", "clex_base_attn_implementation",
                "clex_log_scale_length", TIME_EMBEDDING_KEY, "clexlab_base_rope_parameters"):
        config.pop(key, None)
    own = rope.own
    config.update(
        rope_theta=own.base,
        max_position_embeddings=rope.train_length,
        rope_scaling={
            "type": "clex",
            "max_factor": rope.max_scale,
            "param_factor": rope.dynamics.up_proj.shape[1] // rope.head_dim,
            "act": rope.dynamics.act_name,
            "factor": 1,
            "time_dt": rope.time_dt,
        },
        log_scale=getattr(model.config, "_attn_implementation", None) == LOG_SCALE_ATTN,
        use_flashattn=True,
    )
    partial = arch.partial_rotary_factor(model.config)
    if partial != 1.0:
        config["partial_rotary_factor"] = partial
    base_params = {k: v for k, v in own.parameters.items() if k not in ("rope_theta", "partial_rotary_factor")}
    if own.rope_type != "default":
        config["clexlab_base_rope_parameters"] = base_params
    if torch.equal(rope.dynamics.e0, rope.dynamics.z0):
        config[TIME_EMBEDDING_KEY] = "model"
    if byte_tokenizer:
        config["clexlab_tokenizer"] = "bytes"
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copy2(Path(tokenizer_dir) / name, out / name)
