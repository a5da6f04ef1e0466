"""needle_nll: hand-computed values on a model with known outputs, and agreement with full logits."""

import math

import pytest
import torch

from clexlab.data.tokenizer import ByteTokenizer
from clexlab.evaluation.needle import (
    answer_ids,
    needle_nll,
    needle_report,
    score_answer,
)
from clexlab.evaluation.passkey import build_prompt, passkey_for


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def test_uniform_model_by_hand():
    # A zero head gives equal logits over 257 tokens: every token costs log(257) nats, and the argmax is token 0.
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    tok = ByteTokenizer()
    score = score_answer(model, tok.encode("The pass key is"), tok.encode(" 12345"), tok)
    assert score.nll == pytest.approx(6 * math.log(257), rel=1e-5)
    assert (score.digits, score.digits_right) == (5, 0)  # the space carries no digit


def test_a_head_that_always_prefers_3_by_hand():
    # Zero weights and a bias: the logits are the bias at every position, 3.0 for "3" and 0 elsewhere.
    model, tok = tiny_llama(), ByteTokenizer()
    head = torch.nn.Linear(32, 257, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[ord("3")] = 3.0
    model.lm_head = head
    score = score_answer(model, tok.encode("The pass key is"), tok.encode(" 12345"), tok)
    log_z = math.log(256 + math.exp(3.0))
    assert score.nll == pytest.approx(6 * log_z - 3.0, rel=1e-5)
    assert (score.digits, score.digits_right) == (5, 1)  # only the "3" is the argmax


def test_teacher_forced_score_matches_the_full_logits():
    model, tok = tiny_llama(1), ByteTokenizer()
    prompt = build_prompt(tok, 400, 0.5, "54321")
    target = answer_ids(tok, prompt.text, "54321")
    score = score_answer(model, prompt.ids, target, tok)
    ids = torch.tensor([prompt.ids + target])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt.ids) - 1 : -1].float()
    reference = torch.nn.functional.cross_entropy(logits, torch.tensor(target), reduction="sum").item()
    assert score.nll == pytest.approx(reference, rel=1e-5)
    right = (logits.argmax(-1) == torch.tensor(target)).tolist()
    assert score.digits_right == sum(right[1:]) and score.digits == 5  # target[0] is the space


def test_grid_keys_lengths_and_report(tmp_path):
    from clexlab.evaluation import read_png_data

    model, tok = tiny_llama(2), ByteTokenizer()
    result = needle_nll(model, tok, [100, 300, 500], [0.0, 1.0], n_samples=2, seed=3)
    assert result.nll[0] == [None, None]  # 100 tokens cannot hold the prompt: skipped
    assert all(v is not None and v > 0 for row in result.nll[1:] for v in row)
    keys = {s["key"] for s in result.samples}
    assert passkey_for(3, 300, 1.0, 1) in keys and all(s["tokens"] <= s["length"] for s in result.samples)
    assert max(s["tokens"] for s in result.samples if s["length"] == 500) >= 490  # the prompt fills the length
    payload = result.to_dict()
    assert payload["nll"]["300"] == pytest.approx(sum(result.nll[1]) / 2) and payload["digit_accuracy"]["100"] is None
    report = needle_report(payload, tmp_path)
    assert report.key == "needle_nll" and report.metrics["eval/needle_nll@500"] == payload["nll"]["500"]
    assert read_png_data(tmp_path / "needle_heatmap.png")["grid"] == payload["grid"]["digit_accuracy"]


def test_callback_logs_during_training_with_the_retrieval_mix(compose_train, tmp_path):
    from clexlab.workflows.train import train
    from tests.conftest import FAST

    cfg = compose_train(
        *FAST,
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "callbacks.needle_eval.every_n_steps=1",
        "callbacks.needle_eval.lengths=[300]",
        "callbacks.needle_eval.depths=[0.5]",
        "callbacks.needle_eval.samples=1",
        "data.retrieval={_target_:clexlab.data.retrieval.RetrievalMix,fraction:0.5}",
    )
    train(cfg)
    header, *rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    for key in ("val/needle_nll@300", "val/needle_digit_acc@300"):
        column = header.split(",").index(key)
        values = [float(r.split(",")[column]) for r in rows if r.split(",")[column]]
        assert len(values) == 2 and all(v >= 0 for v in values)  # steps 1 and 2


def test_the_retrieval_experiment_composes(compose_train):
    from clexlab.utils.schema import validate_config

    cfg = compose_train("experiment=retrieval", "logger=csv")
    typed = validate_config(cfg)
    assert cfg.model.train_length == 512 and cfg.data.retrieval.fraction == 0.9
    assert typed["eval"].tasks == ["ppl", "passkey", "ruler", "needle_nll"]
    assert [m.rope.name for m in cfg.protocol.methods] == ["none", "pi", "ntk", "yarn", "clex", "clex"]
