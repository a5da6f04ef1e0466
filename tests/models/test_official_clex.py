"""The released CLEX format: load without remote code, match the released ODE, export and read back."""

import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from clexlab.models.official_clex import DOWN, INV_FREQ, UP, export_official_clex, load_official_clex
from clexlab.rope import install_clex
from clexlab.rope.log_scale import enable_log_scale
from clexlab.utils.errors import UserError

L, T_MAX, BASE = 16, 4, 10000.0


def tiny_clex_llama(seed=0, log_scale=False, tie=False):
    """A tiny LLaMA (head_dim 16) with clexlab CLEX and a trained-looking (non-zero) ODE."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=L, tie_word_embeddings=tie,
        rope_parameters={"rope_type": "default", "rope_theta": BASE},
    )
    model = LlamaForCausalLM(config).eval()
    rope = install_clex(model, train_length=L, max_scale=T_MAX, time_dt=0.01)
    with torch.no_grad():
        rope.dynamics.down_proj.normal_(0.0, 0.3)
    if log_scale:
        enable_log_scale(model, L)
    return model, rope


def write_released_dir(model, rope, path, weights="safetensors", log_scale=False, inv_freq_base=BASE, theta=BASE):
    """A directory laid out as the released CLEX checkpoints are, written by hand (not by the exporter)."""
    path.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("rope_parameters")
    config.update(
        rope_theta=theta, architectures=["LlamaForCausalLM"], model_type="llama", log_scale=log_scale,
        use_flashattn=True, rope_scaling={"type": "clex", "max_factor": T_MAX, "param_factor": 1, "act": "tanh", "factor": 1},
        auto_map={"AutoConfig": "configuration_clex.CLEXLlamaConfig", "AutoModelForCausalLM": "modeling_llama_clex.LlamaForCausalLM"},
    )
    (path / "config.json").write_text(json.dumps(config))
    tied = model.config.tie_word_embeddings  # saved once, as transformers does
    state = {k: v.clone() for k, v in model.state_dict().items() if "rotary_emb" not in k and not (tied and k == "lm_head.weight")}
    state[UP] = rope.dynamics.up_proj.detach().clone()
    state[DOWN] = rope.dynamics.down_proj.detach().clone()
    d = rope.head_dim
    state[INV_FREQ] = 1.0 / (inv_freq_base ** (torch.arange(0, d, 2).float() / d))  # as the released module builds it
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path / "model.safetensors"))
    else:  # two pytorch_model shards and their index, as large releases are split
        keys = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2], "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2 :]}
        for name, names in shards.items():
            torch.save({k: state[k] for k in names}, path / name)
        total = sum(v.numel() * v.element_size() for v in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": {k: name for name, names in shards.items() for k in names}}
        (path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return path


class ReleasedODE(nn.Module):
    """The released ``ODELinear`` vector field, written out here as an independent reference (base 10000)."""

    def __init__(self, up, down, dim):
        super().__init__()
        self.ode_up_proj, self.ode_down_proj, self.dim = up, down, dim

    def forward(self, t, x):
        alpha = 2 * t - 1 if t >= 1 else torch.ones(())
        index = torch.arange(0, self.dim, 2, dtype=torch.float32)
        ntk_inv_freq = 1.0 / ((10000 * alpha ** (self.dim / (self.dim - 2))) ** (index / self.dim))
        delta = -2 * index / (self.dim - 2) / (10000 ** (index / self.dim) * alpha ** (index / (self.dim - 2) + 1))
        hidden = torch.tanh((x + torch.log(ntk_inv_freq)) @ self.ode_up_proj.float())
        return hidden @ self.ode_down_proj.float() + delta / ntk_inv_freq


def released_table(up, down, inv_freq):
    from torchdiffeq import odeint

    ode = ReleasedODE(up, down, 2 * inv_freq.numel())
    times = torch.arange(1.0, T_MAX + 1.0)
    return odeint(ode, torch.log(inv_freq), times, method="rk4", options={"step_size": 0.01})


def logits(model, n):
    ids = torch.arange(n).remainder(61)[None] + 1
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_released_directory_loads_with_the_released_frequencies_and_same_logits(tmp_path, weights):
    model, rope = tiny_clex_llama()
    directory = write_released_dir(model, rope, tmp_path / "clex", weights)
    loaded, info = load_official_clex(directory)
    assert info["train_length"] == L and info["max_scale"] == T_MAX and not info["log_scale"]
    new = loaded.model.rotary_emb
    assert new is not rope and new.dynamics.down_proj.abs().sum() > 0
    # Frequencies: the released integrator on the released formula, from the saved inv_freq.
    inv_freq = 1.0 / (BASE ** (torch.arange(0, 16, 2).float() / 16))
    reference = released_table(rope.dynamics.up_proj.detach(), rope.dynamics.down_proj.detach(), inv_freq)
    assert_close(new.frequency_table(), reference, atol=1e-4, rtol=0)
    assert (reference[-1] - reference[0]).abs().max() > 0.1  # the ODE really moved them
    # Logits: same weights in clexlab's own module, inside and beyond L (t = 1 and t = 3).
    for n in (L, 3 * L - 5):
        assert_close(logits(loaded, n), logits(model, n), atol=1e-5, rtol=1e-5)


def test_dtype_auto_keeps_the_files_dtype(tmp_path):
    model, rope = tiny_clex_llama()
    directory = write_released_dir(model.to(torch.bfloat16), rope, tmp_path / "clex")
    loaded, _ = load_official_clex(directory, dtype="auto")
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    assert loaded.model.rotary_emb.dynamics.up_proj.dtype == torch.float32  # the ODE stays float32
    assert load_official_clex(directory, dtype="float32")[0].lm_head.weight.dtype == torch.float32


def test_log_scale_and_tied_embeddings_are_honoured(tmp_path):
    model, rope = tiny_clex_llama(log_scale=True, tie=True)
    directory = write_released_dir(model, rope, tmp_path / "clex", log_scale=True)
    loaded, info = load_official_clex(directory)
    assert info["log_scale"] and loaded.config._attn_implementation == "clex_log_scale"
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert_close(logits(loaded, 2 * L), logits(model, 2 * L), atol=1e-5, rtol=1e-5)


def test_inv_freq_buffer_decides_the_base(tmp_path):
    model, rope = tiny_clex_llama()
    # rope_theta says 500000 but the buffer (what the released code actually used) says 10000.
    directory = write_released_dir(model, rope, tmp_path / "clex", theta=500000.0)
    loaded, info = load_official_clex(directory)
    assert info["rope_theta"] == pytest.approx(BASE, rel=1e-4)
    assert_close(logits(loaded, L), logits(model, L), atol=1e-5, rtol=1e-5)


def test_export_then_load_round_trip(tmp_path):
    model, rope = tiny_clex_llama(seed=3, log_scale=True)
    out = export_official_clex(model, tmp_path / "export", byte_tokenizer=True)
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"] == {"type": "clex", "max_factor": T_MAX, "param_factor": 1, "act": "tanh", "factor": 1, "time_dt": 0.01}
    assert config["log_scale"] is True and config["use_flashattn"] is True and config["max_position_embeddings"] == L
    assert config["architectures"] == ["LlamaForCausalLM"] and "rope_parameters" not in config
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert saved[UP].shape == (8, 16) and saved[DOWN].shape == (16, 8)
    assert_close(saved[INV_FREQ], 1.0 / (BASE ** (torch.arange(0, 16, 2).double() / 16)).float())
    assert not any("rotary_emb" in k for k in saved)
    loaded, info = load_official_clex(out)
    assert info["tokenizer"] == "bytes" and info["log_scale"]
    assert torch.equal(loaded.model.rotary_emb.frequency_table(), rope.frequency_table())
    for n in (L, 4 * L):
        assert_close(logits(loaded, n), logits(model, n), atol=1e-5, rtol=1e-5)


def test_bad_directories_are_one_line_errors(tmp_path):
    model, rope = tiny_clex_llama()
    directory = write_released_dir(model, rope, tmp_path / "clex")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(UserError, match="'bert' is not supported by clexlab; supported: gemma"):
        load_official_clex(directory)
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "mixtral"}))
    with pytest.raises(UserError, match="do not fit a MixtralForCausalLM"):
        load_official_clex(directory)
    (directory / "config.json").write_text(json.dumps({**config, "rope_scaling": None}))
    with pytest.raises(UserError, match="not a released CLEX model"):
        load_official_clex(directory)
    (directory / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    del state[DOWN]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(UserError, match="lack the CLEX ODE"):
        load_official_clex(directory)
    with pytest.raises(UserError, match="not CLEX"):
        from transformers import LlamaConfig, LlamaForCausalLM

        export_official_clex(LlamaForCausalLM(LlamaConfig(**{k: config[k] for k in ("hidden_size", "num_attention_heads")}, num_hidden_layers=1, intermediate_size=8, vocab_size=8)), tmp_path / "x")


# ------------------------------------------------------- the Phi-2 and Mixtral releases
def released_family_dir(path, arch: str, theta: float, log_scale: bool):
    """A released CLEX-Phi-2 / CLEX-Mixtral directory, written by hand from the released code's names:
    its config keys (``partial_rotary_factor`` and ``rope_theta`` at the top, ``rope_scaling`` of type clex,
    an ``auto_map``), transformers-4.36-era weight names (Mixtral's ``block_sparse_moe.experts.<i>.w1/w2/w3``)
    and the ODE under ``model.clex_layer`` over the rotary dimension, with ``inv_freq`` from ``rope_theta``."""
    from safetensors.torch import save_file

    from clexlab.arch import get_architecture
    from clexlab.models.builder import build_tiny

    sizes = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 48,
             "train_length": L, "rope_theta": theta}
    torch.manual_seed(5)
    reference = build_tiny({**sizes, "arch": arch}, 64).eval()
    rotary_dim = get_architecture(arch).rotary_dim(reference.config)
    state = {}
    for key, value in reference.state_dict().items():
        if "rotary_emb" in key:
            continue
        if ".mlp.experts.gate_up_proj" in key:  # transformers 5 fuses what the release stores per expert
            layer = key.split(".mlp.")[0].replace(".layers.", ".layers.")
            for e in range(value.shape[0]):
                w1, w3 = value[e].chunk(2, dim=0)
                state[f"{layer}.block_sparse_moe.experts.{e}.w1.weight"] = w1.clone()
                state[f"{layer}.block_sparse_moe.experts.{e}.w3.weight"] = w3.clone()
            continue
        if ".mlp.experts.down_proj" in key:
            layer = key.split(".mlp.")[0]
            for e in range(value.shape[0]):
                state[f"{layer}.block_sparse_moe.experts.{e}.w2.weight"] = value[e].clone()
            continue
        state[key.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = value.clone()
    up = torch.randn(rotary_dim // 2, rotary_dim) * 0.3
    down = torch.randn(rotary_dim, rotary_dim // 2) * 0.3
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))
    state.update({UP: up, DOWN: down, INV_FREQ: inv_freq})
    path.mkdir(parents=True)
    save_file(state, str(path / "model.safetensors"))
    config = reference.config.to_dict()
    params = config.pop("rope_parameters")
    config.update(
        rope_theta=theta, log_scale=log_scale, use_flashattn=True, max_position_embeddings=L,
        rope_scaling={"type": "clex", "max_factor": T_MAX, "param_factor": 1, "act": "tanh", "factor": 1},
        auto_map={"AutoConfig": f"configuration_{arch}_clex.CLEX{arch.title()}Config"},
    )
    if "partial_rotary_factor" in params:
        config["partial_rotary_factor"] = params["partial_rotary_factor"]
    (path / "config.json").write_text(json.dumps(config))
    return reference, up, down, inv_freq


@pytest.mark.parametrize("arch, theta, log_scale", [("phi", 10000.0, False), ("mixtral", 1e6, True)])
def test_released_phi2_and_mixtral_directories_load_with_the_released_ode(tmp_path, arch, theta, log_scale):
    reference, up, down, inv_freq = released_family_dir(tmp_path / arch, arch, theta, log_scale)
    loaded, info = load_official_clex(tmp_path / arch)
    assert type(loaded).__name__ == type(reference).__name__ and info["log_scale"] == log_scale
    # Every weight arrived (Mixtral's per-expert w1/w2/w3 fused by transformers' own loader).
    mine = {k: v for k, v in loaded.state_dict().items() if "rotary_emb" not in k}
    assert mine.keys() == {k for k in reference.state_dict() if "rotary_emb" not in k}
    for key, value in reference.state_dict().items():
        if "rotary_emb" not in key:
            assert torch.equal(mine[key], value), key
    # The released ODE: its time embedding uses base 10000 even for Mixtral's rope_theta 1e6,
    # over the rotary dimension (Phi-2 rotates part of each head).
    rope = loaded.model.rotary_emb
    assert rope.head_dim == 2 * inv_freq.numel() and rope.own.base == pytest.approx(theta)
    assert_close(rope.frequency_table(), released_table(up, down, inv_freq), atol=1e-4, rtol=0)
