"""Passkey prompts: deterministic, the key at the requested depth, the requested length in the model's tokens."""

import pytest
import torch
from torch import nn

from clexlab.data.tokenizer import ByteTokenizer, HFTokenizer
from clexlab.evaluation import build_prompt, parse_passkey, passkey_for, passkey_retrieval
from clexlab.evaluation.passkey import FILLER, QUESTION, TASK, info_line, min_prompt_tokens
from clexlab.utils.errors import UserError
from tests.workflows.test_local_checkpoint import save_tiny_hf_model

DEPTHS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Bytes, a character-level HF tokenizer and a small BPE trained here (merges across digits and words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("tok")
    save_tiny_hf_model(root / "chars")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [TASK, FILLER * 3, QUESTION, *(info_line(str(k)) for k in range(10000, 99999, 997))]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    from tokenizers import decoders

    bpe.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(root / "bpe")
    return {"bytes": ByteTokenizer(), "chars": HFTokenizer(root / "chars"), "bpe": HFTokenizer(root / "bpe")}


def word_tolerance(tokenizer):
    """One filler word and its space: the granularity of the length search (+1 for a boundary merge)."""
    return max(len(tokenizer.encode(" " + w)) for w in FILLER.split()) + 1


@pytest.mark.parametrize("name", ["bytes", "chars", "bpe"])
@pytest.mark.parametrize("length", [300, 1000, 2048])
def test_prompt_hits_the_length_in_the_models_tokens(tokenizers, name, length):
    tok = tokenizers[name]
    for depth in (0.0, 0.5, 1.0):
        prompt = build_prompt(tok, length, depth, "12345", prefix_ids=[1])
        assert prompt.ids[0] == 1 and prompt.ids[1:] == tok.encode(prompt.text)
        assert length - word_tolerance(tok) <= len(prompt.ids) <= length, (name, depth, len(prompt.ids))
        assert prompt.text.startswith(TASK) and prompt.text.endswith(QUESTION)
        assert prompt.text.count("12345") == 2 and FILLER.split()[0] in prompt.text


@pytest.mark.parametrize("name", ["bytes", "bpe"])
def test_key_sits_at_the_requested_depth(tokenizers, name):
    tok = tokenizers[name]
    for depth in DEPTHS:
        prompt = build_prompt(tok, 2048, depth, "54321")
        assert prompt.key_depth == pytest.approx(depth, abs=0.01)
        # the same, measured on the text: the key line's offset within the filler
        start = prompt.text.index(TASK) + len(TASK)
        end = prompt.text.index(QUESTION)
        line = prompt.text.index(info_line("54321"))
        filler_chars = (end - start) - len(info_line("54321"))
        assert (line - start) / filler_chars == pytest.approx(depth, abs=0.01)


def test_prompts_and_keys_are_deterministic(tokenizers):
    keys = [passkey_for(0, 1024, d, s) for d in DEPTHS for s in range(5)]
    assert keys == [passkey_for(0, 1024, d, s) for d in DEPTHS for s in range(5)]
    assert all(len(k) == 5 and k.isdigit() for k in keys) and len(set(keys)) > 30
    assert keys != [passkey_for(1, 1024, d, s) for d in DEPTHS for s in range(5)]
    a = build_prompt(tokenizers["bpe"], 700, 0.3, keys[0])
    assert a == build_prompt(tokenizers["bpe"], 700, 0.3, keys[0], hint=3)  # the hint only speeds the search


@pytest.mark.parametrize(
    "text,answer",
    [
        (" 12345.", "12345"),
        ("The pass key is 12345. Remember it.", "12345"),
        ("ab12345cd", "12345"),
        ("１２３４５", "12345"),  # full-width digits
        ("12345 and 67890", "12345"),
        ("1 2345 67890", "67890"),
        ("123456", None),  # a six-digit run is not a five-digit key
        ("1234", None),
        ("", None),
        ("\n\n 98765</s>", "98765"),
    ],
)
def test_parser(text, answer):
    assert parse_passkey(text) == answer


class Oracle(nn.Module):
    """A stand-in LM whose generate answers by reading the key from the prompt (or answers wrong)."""

    def __init__(self, tokenizer, wrong=False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.tokenizer, self.wrong, self.prompts = tokenizer, wrong, []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        text = self.tokenizer.decode(input_ids[0].tolist())
        self.prompts.append(input_ids.shape[1])
        key = parse_passkey(text)
        answer = f" {int(key) + 1 if self.wrong else key}. Remember"
        new = torch.tensor([self.tokenizer.encode(answer)[:max_new_tokens]])
        return torch.cat([input_ids, new], dim=1)


def test_retrieval_grid_scores_exact_matches(tokenizers):
    tok = tokenizers["bytes"]
    lengths, depths = [100, 400, 600], [0.0, 0.5, 1.0]
    right = passkey_retrieval(Oracle(tok), tok, lengths, depths, n_samples=3, seed=7)
    assert right.accuracy == [[None] * 3, [1.0] * 3, [1.0] * 3]  # 100 tokens cannot hold the prompt
    assert min_prompt_tokens(tok) > 100
    oracle = Oracle(tok, wrong=True)
    wrong = passkey_retrieval(oracle, tok, lengths, depths, n_samples=3, seed=7)
    assert wrong.accuracy[1:] == [[0.0] * 3, [0.0] * 3]
    assert all(390 <= n <= 400 for n in oracle.prompts[:9])
    assert [a["key"] for a in right.answers] == [a["key"] for a in wrong.answers]  # same seed, same keys
    assert right.to_dict() == {"lengths": lengths, "depths": depths, "accuracy": right.accuracy, "n_samples": 3, "seed": 7}
    assert right.mean_accuracy(400) == 1.0 and right.mean_accuracy(100) is None


def test_real_generation_runs_and_is_deterministic(tiny_module, tokenizers):
    tok = tokenizers["bytes"]
    model = tiny_module.model
    a = passkey_retrieval(model, tok, [256, 300], [0.0, 1.0], n_samples=2, seed=1, max_new_tokens=6)
    b = passkey_retrieval(model, tok, [256, 300], [0.0, 1.0], n_samples=2, seed=1, max_new_tokens=6)
    assert a.answers == b.answers and len(a.answers) == 8
    assert all(0.0 <= v <= 1.0 for row in a.accuracy for v in row)


def test_bad_depth_is_a_user_error(tokenizers):
    with pytest.raises(UserError, match="depths must be in"):
        build_prompt(tokenizers["bytes"], 500, 1.5, "12345")
    with pytest.raises(UserError, match="shorter than the prompt"):
        build_prompt(tokenizers["bytes"], 50, 0.5, "12345")
