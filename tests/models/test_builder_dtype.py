"""``model.dtype: auto`` and ``model.vocab_size`` in the builder.

A bf16 checkpoint loaded with ``dtype: auto`` must come out bf16 without a
float32 copy of its weights ever being made: every aten op's output is
watched during loading, and the same watcher does catch the float32 copies
when the loader is asked for float32 (so the check can fail).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from clexlab.models.builder import build_model, build_skeleton, build_tiny, load_pretrained
from clexlab.utils.errors import UserError

SIZES = {
    "name": "bf16-ckpt",
    "tokenizer": "bytes",
    "train_length": 64,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 160,
    "rope_theta": 10000.0,
    "attn_implementation": "sdpa",
}


class Float32Watch(TorchDispatchMode):
    """Records every float32 tensor at least as large as the smallest weight matrix that an op produces."""

    def __init__(self, min_numel: int) -> None:
        super().__init__()
        self.min_numel = min_numel
        self.seen: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel() >= self.min_numel:
                self.seen.append((str(func), tuple(t.shape)))
        return out


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    """A small LLaMA saved in bf16 (config.json records dtype bfloat16), with its smallest matrix's size."""
    torch.manual_seed(0)
    model = build_tiny({**SIZES, "dtype": "bfloat16"}, 300)
    path = tmp_path_factory.mktemp("bf16-llama")
    model.save_pretrained(path)
    smallest = min(p.numel() for p in model.parameters() if p.ndim == 2)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    return path, smallest, reference


def load_watched(path, dtype: str, min_numel: int):
    watch = Float32Watch(min_numel)
    with watch:
        model = build_model({**SIZES, "path": str(path), "dtype": dtype}, 300)
    return model, watch.seen


def test_auto_keeps_bf16_without_a_float32_copy(bf16_checkpoint):
    path, smallest, reference = bf16_checkpoint
    model, float32_tensors = load_watched(path, "auto", smallest)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert float32_tensors == []
    # The weights are the checkpoint's, bit for bit.
    for name, value in model.state_dict().items():
        if name in reference:
            assert torch.equal(value, reference[name]), name


def test_the_watch_sees_a_float32_load(bf16_checkpoint):
    """Asked for float32, the loader does make float32 weight tensors: the watcher above would catch them."""
    path, smallest, _ = bf16_checkpoint
    model, float32_tensors = load_watched(path, "float32", smallest)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert len(float32_tensors) >= sum(1 for p in model.parameters() if p.ndim == 2)


def test_auto_without_weights_uses_the_recorded_dtype(bf16_checkpoint):
    path, _, _ = bf16_checkpoint
    model = load_pretrained({**SIZES, "path": str(path), "dtype": "auto"}, load_weights=False)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    skeleton = build_skeleton({**SIZES, "path": str(path), "dtype": "auto"})
    assert next(skeleton.parameters()).device.type == "meta"
    assert skeleton.config.vocab_size == 300


def test_auto_for_a_model_built_in_code_is_float32():
    model = build_tiny({**SIZES, "dtype": "auto"}, 300)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_vocab_size_key_overrides_the_tokenizer():
    model = build_tiny({**SIZES, "dtype": "float32", "vocab_size": 1000}, 257)
    assert model.get_input_embeddings().weight.shape[0] == 1000
    assert model.lm_head.weight.shape[0] == 1000
    assert build_tiny({**SIZES, "dtype": "float32", "vocab_size": None}, 257).config.vocab_size == 257


def test_vocab_size_below_the_tokenizer_is_a_user_error():
    with pytest.raises(UserError, match="smaller than the tokenizer"):
        build_tiny({**SIZES, "dtype": "float32", "vocab_size": 100}, 257)


def test_unknown_dtype_is_a_user_error():
    with pytest.raises(UserError, match="model.dtype must be one of"):
        build_tiny({**SIZES, "dtype": "float64"}, 257)
