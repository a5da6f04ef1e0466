"""Continued training from a local Hugging Face directory: the 7B path, at tiny size."""

import string

import pytest
import torch

from tests.conftest import FAST


def save_tiny_hf_model(path, rope_theta=10000.0):
    """A tiny LLaMA and a character-level tokenizer, saved the way real checkpoints are."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<unk>", "</s>", *string.printable])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")
    tokenizer.save_pretrained(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return tokenizer


def test_train_from_local_hf_directory_uses_its_weights_and_tokenizer(compose_train, tmp_path):
    from transformers import LlamaForCausalLM

    from clexlab.workflows.train import train

    model_dir = tmp_path / "hf"
    save_tiny_hf_model(model_dir, rope_theta=5000.0)
    cfg = compose_train(
        *FAST,
        "model=llama7b",
        f"model.path={model_dir}",
        "model.train_length=32",
        "model.gradient_checkpointing=true",
        "trainer.precision=32-true",
        "trainer.accumulate_grad_batches=1",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "callbacks.long_context_eval.max_tokens=256",
        "eval.max_tokens=256",
        "eval.multiples=[1,2]",
        "callbacks.long_context_eval.multiples=[1,2]",
        "logger=none",
    )
    payload = train(cfg)
    assert set(payload["ppl"]) == {"32", "64"}
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["vocab_size"] == 102
    assert ckpt["state_dict"]["model.lm_head.weight"].shape == (102, 32)
    # the ODE uses the checkpoint's own RoPE base, not a default
    from clexlab.models import LongContextLM

    module = LongContextLM(**ckpt["hyper_parameters"], load_weights=False)
    assert module.clex_rope.dynamics.base == 5000.0
    original = LlamaForCausalLM.from_pretrained(model_dir)
    # continued, not re-initialised: two small steps stay close to the pretrained weights
    w0 = original.model.embed_tokens.weight
    w1 = ckpt["state_dict"]["model.model.embed_tokens.weight"]
    assert (w1 - w0).abs().max() < 0.05 and not torch.equal(w0, w1)


@pytest.mark.parametrize("content,fragment", [(None, "has no config.json"), ('{"model_type": "bert"}', "without RoPE")])
def test_bad_model_directories_are_user_errors(tmp_path, content, fragment):
    from clexlab.utils.checks import check_model_dir
    from clexlab.utils.errors import UserError

    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(UserError, match=fragment):
        check_model_dir(str(tmp_path))
    with pytest.raises(UserError, match="not a directory"):
        (tmp_path / "file").write_text("x")
        check_model_dir(str(tmp_path / "file"))
