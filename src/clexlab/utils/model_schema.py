"""The ``model`` node's schema, and the shape checks of a model built in code.

transformers builds a model from whatever sizes it is given and fails late, or
not at all: ``hidden_size=130`` with 4 heads silently floors the head
dimension, an odd head dimension breaks ``rotate_half`` at the first forward,
and some families' config validators raise deep inside the build. The checks
here run on plain numbers, before transformers is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clexlab.utils.errors import UserError

TOKENIZERS = ("bytes", "hf", "auto")
DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")  # clexlab.models.builder maps them
SOLVERS = ("fast", "rk4")  # released CLEX models (model.clex_solver)
# transformers' attention implementations (a registered AttentionInterface name works too: see check)
ATTENTION = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass
class ModelConfig:
    """Every key of a ``model`` node (``conf/model/*.yaml``, ``conf/eval.yaml``'s ``model``).

    Sizes are read only for models built in code (``path`` unset); a local
    directory brings its own config.json, which transformers validates.
    """

    name: Any = "model"
    arch: str | None = None  # family of a model built in code (clexlab.arch)
    path: str | None = None  # a local Hugging Face directory
    tokenizer: str = "auto"
    train_length: int | None = None
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None
    intermediate_size: int | None = None
    head_dim: int | None = None
    rope_theta: float = 10000.0
    partial_rotary_factor: float | None = None
    num_experts: int | None = None
    experts_per_token: int | None = None
    tie_word_embeddings: bool | None = None
    vocab_size: int | None = None
    dtype: str | None = "float32"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = "sdpa"
    clex_solver: str = "fast"
    rope_parameters: dict[str, Any] | None = None  # e.g. Llama-3.1's llama3 scaling in a recipe
    config_overrides: dict[str, Any] | None = None  # any other key of the family's transformers config

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise UserError(f"model.tokenizer must be one of {list(TOKENIZERS)}, got {self.tokenizer!r}")
        if (self.dtype or "float32") not in DTYPE_NAMES:
            raise UserError(f"model.dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        if self.clex_solver not in SOLVERS:
            raise UserError(f"model.clex_solver must be one of {list(SOLVERS)}, got {self.clex_solver!r}")
        if self.attn_implementation is not None and self.attn_implementation not in ATTENTION:
            raise UserError(f"model.attn_implementation must be one of {list(ATTENTION)}, got {self.attn_implementation!r}")
        if self.train_length is not None and self.train_length < 2:
            raise UserError(f"model.train_length must be an integer >= 2 (the training sequence length), got {self.train_length}")
        if self.vocab_size is not None and self.vocab_size < 1:
            raise UserError(f"model.vocab_size must be a positive integer or null (the tokenizer's), got {self.vocab_size}")


def validate_model(node: Any, built_in_code: bool) -> ModelConfig:
    """The typed ``model`` node: wrong types, unknown keys and values out of range are one line.

    Args:
        node: the ``model`` config node.
        built_in_code: the run builds the model from the node's sizes (no ``model.path``),
            so they must fit together (:func:`check_shape`).
    """
    try:
        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    except OmegaConfBaseException as err:
        raise UserError(f"model: {str(err).splitlines()[0]}") from err
    missing = [k for k, v in plain.items() if v == "???" and k != "path"]
    if missing:
        raise UserError(f"model.{missing[0]} is mandatory (???): set it, e.g. model.{missing[0]}=...")
    if plain.get("path") == "???":  # a recipe's mandatory path, unset (fine for a dry run; checked where it matters)
        plain["path"] = None
    if plain.get("path") is not None and not isinstance(plain["path"], str):  # OmegaConf would make 5 into "5"
        raise UserError(f"model.path must be a directory path (quote a numeric one) or null, got {plain['path']!r}")
    try:
        model = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), plain))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        raise UserError(f"model.{key}: {str(err).strip().splitlines()[0]}".replace("model.: ", "model: ")) from err
    if built_in_code:
        check_shape(model)
    return model


def _positive(key: str, value: int | None) -> int:
    if value is None or value < 1:
        raise UserError(f"model.{key} must be a positive integer for a model built in code, got {value!r}")
    return value


def check_shape(model: ModelConfig) -> None:
    """The sizes of a model built in code fit together (one line naming the keys otherwise).

    Checked on the keyword arguments the family's adapter would hand to
    transformers (:meth:`~clexlab.arch.base.Architecture.tiny_kwargs`), so a
    family that ignores a key (GPT-NeoX has no grouped-query attention) is
    judged by what it would actually build.
    """
    from clexlab.arch import get_architecture

    arch = get_architecture(model.arch or "llama")
    hidden, heads = _positive("hidden_size", model.hidden_size), _positive("num_heads", model.num_heads)
    _positive("num_layers", model.num_layers)
    _positive("intermediate_size", model.intermediate_size)
    if model.train_length is None:
        raise UserError("model.train_length must be set for a model built in code (the training sequence length)")
    if not model.rope_theta > 0:
        raise UserError(f"model.rope_theta must be > 0, got {model.rope_theta}")
    if model.partial_rotary_factor is not None:
        if arch.tiny_partial_rotary is None:
            raise UserError(f"model.partial_rotary_factor: model.arch={arch.model_type} rotates whole heads; unset it")
        if not 0 < model.partial_rotary_factor <= 1:
            raise UserError(f"model.partial_rotary_factor must be in (0, 1], got {model.partial_rotary_factor}")
    for key in ("head_dim", "num_experts", "experts_per_token"):  # 0 would silently fall back to a default
        value = getattr(model, key)
        if value is not None and value < 1:
            raise UserError(f"model.{key} must be a positive integer or null, got {value}")
    if model.head_dim is None and hidden % heads:
        raise UserError(
            f"model.hidden_size={hidden} is not divisible by model.num_heads={heads}: "
            "pick sizes with hidden_size = num_heads * head_dim (or set model.head_dim)"
        )
    kwargs, head_dim, rotary = _built(model)
    if head_dim < 2:
        raise UserError(f"model.head_dim={head_dim} is too small: RoPE needs at least 2 dimensions per head")
    kv_heads = int(kwargs.get("num_key_value_heads") or heads)
    if model.num_kv_heads is not None and not 1 <= model.num_kv_heads <= heads:
        raise UserError(f"model.num_kv_heads must be in [1, num_heads={heads}], got {model.num_kv_heads}")
    if heads % kv_heads:
        raise UserError(
            f"model.num_heads={heads} is not a multiple of model.num_kv_heads={kv_heads}: "
            "grouped-query attention shares each key/value head among the same number of query heads"
        )
    if rotary < 2 or rotary % 2:
        raise UserError(
            f"model: RoPE rotates {rotary} dimensions per head (head_dim {head_dim} x partial_rotary_factor), which "
            "must be even and >= 2: change model.head_dim, hidden_size/num_heads or partial_rotary_factor"
        )
    if model.num_experts is not None or model.experts_per_token is not None:
        if not arch.moe:
            raise UserError(f"model.num_experts / experts_per_token: model.arch={arch.model_type} has no experts; unset them")
        experts = int(kwargs.get("num_local_experts") or kwargs.get("num_experts") or 1)
        per_token = int(kwargs.get("num_experts_per_tok") or 1)
        if not 1 <= per_token <= experts:
            raise UserError(f"model.experts_per_token must be in [1, num_experts={experts}], got {per_token}")


def _built(model: ModelConfig) -> tuple[dict[str, Any], int, int]:
    """What the family's adapter would hand transformers, the head dimension and the rotated dimensions."""
    from clexlab.arch import get_architecture

    kwargs = get_architecture(model.arch or "llama").tiny_kwargs(
        {k: v for k, v in vars(model).items() if v is not None}, vocab_size=1
    )
    head_dim = int(kwargs.get("head_dim") or model.hidden_size // model.num_heads)
    return kwargs, head_dim, int(head_dim * kwargs["rope_parameters"].get("partial_rotary_factor", 1.0))


def rotary_dim(model: ModelConfig) -> int:
    """Dimensions of each head RoPE rotates in a model built in code from ``model``."""
    return _built(model)[2]
