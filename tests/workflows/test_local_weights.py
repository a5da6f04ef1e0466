"""A local Hugging Face directory continues from its own weights, not from a fresh initialisation.

The directory's weights are made with seed 1234 and the run uses seed 0, so a
run that silently re-initialised the model (from its own seed) could not end
up near them: the comparison below fails for any re-initialisation.
"""

import torch

from tests.conftest import FAST
from tests.reliability.helpers import write_corpus
from tests.workflows.test_local_checkpoint import save_tiny_hf_model

WEIGHTS_SEED = 1234


def test_training_continues_from_the_directorys_own_weights(compose_train, tmp_path):
    from transformers import LlamaForCausalLM

    from clexlab.workflows.train import train

    model_dir = tmp_path / "hf"
    save_tiny_hf_model(model_dir)  # tokenizer and config (and seed-0 weights, replaced next)
    config = LlamaForCausalLM.from_pretrained(model_dir).config
    torch.manual_seed(WEIGHTS_SEED)
    LlamaForCausalLM(config).save_pretrained(model_dir)
    saved = LlamaForCausalLM.from_pretrained(model_dir).state_dict()
    torch.manual_seed(0)
    seed0 = LlamaForCausalLM(config).state_dict()  # what a re-initialisation with the run's seed would start from

    cfg = compose_train(
        *FAST, *write_corpus(tmp_path / "corpus", 3000, 600), "seed=0", "model=llama7b", f"model.path={model_dir}", "model.train_length=32",
        "trainer.precision=32-true", "trainer.accumulate_grad_batches=1", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "eval.multiples=[1]", "callbacks.long_context_eval.multiples=[1]",
        "callbacks.long_context_eval.max_tokens=64", "eval.max_tokens=64", "logger=none",
    )
    assert cfg.seed != WEIGHTS_SEED
    train(cfg)
    trained = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    checked = 0
    for key, start in saved.items():
        if "rotary_emb" in key or start.ndim < 2:
            continue  # norms start at 1 whatever the seed
        now = trained[f"model.{key}"]
        assert (now - start).abs().max() < 0.05, key  # two small steps from the directory's weights ...
        assert not torch.equal(now, start), key  # ... that did train
        assert (seed0[key] - start).abs().max() > 0.05, key  # and a re-initialisation would be far from them
        checked += 1
    assert checked >= 10
