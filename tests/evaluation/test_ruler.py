"""RULER offline: scoring by hand, the tasks' contents, prompt sizing in the model's tokens, determinism, errors."""

import random
import re

import pytest
import torch

from clexlab.data.tokenizer import ByteTokenizer, HFTokenizer
from clexlab.evaluation.ruler import (
    TASKS,
    PromptBuilder,
    TaskContext,
    format_ruler_table,
    postprocess,
    ruler_eval,
    ruler_report,
    string_match_all,
    string_match_part,
)
from clexlab.evaluation.ruler.extraction import (
    coded_vocab,
    cwe_sample,
    fwe_sample,
    zeta,
)
from clexlab.evaluation.ruler.niah import SPECS, niah_sample
from clexlab.evaluation.ruler.variable_tracking import vt_sample
from clexlab.evaluation.ruler.words import extraction_words, wonderwords_list
from clexlab.utils.errors import UserError

ESSAY = ("It was a bright cold day in April. The clocks were striking thirteen. " * 200).split()


def test_scores_by_hand():
    preds = ["The numbers are 123 and 456.", "only 123", "nothing"]
    refs = [["123", "456"], ["123", "456"], ["123"]]
    assert string_match_all(preds, refs) == pytest.approx(round(100 * (1 + 0.5 + 0) / 3, 2))  # 50.0
    assert string_match_part(preds, refs) == pytest.approx(round(100 * (1 + 1 + 0) / 3, 2))  # 66.67
    assert string_match_all(["ALPHA-beta"], [["alpha-BETA"]]) == 100.0  # case-insensitive
    assert postprocess("  7\x00x\t ") == "7\nx"


def test_word_lists_ship_with_wonderwords():
    nouns, adjs = wonderwords_list("nounlist"), wonderwords_list("adjectivelist")
    assert len(nouns) > 5000 and len(adjs) > 500 and "aardvark" in nouns
    words = extraction_words()
    assert list(words) == sorted(set(words)) and len(words) > 8000
    import wonderwords

    assert wonderwords.__file__  # imported from the wheel: nothing was fetched


def test_niah_variants_hold_their_needles():
    ctx = TaskContext(4096, ESSAY)
    for name, spec in SPECS.items():
        sample = niah_sample(spec, random.Random(3), 40, ctx)
        n_answers = spec.num_values * spec.num_queries
        assert len(sample.answers) == n_answers, name
        for value in sample.answers:
            assert sample.task_text.count(value) == 1, (name, value)
        singular = n_answers == 1
        assert sample.task_text.startswith("A special magic" if singular else "Some special magic"), name
        assert sample.answer_prefix.endswith(" is" if singular else " are"), name
        kind = {"numbers": r"\d{7}", "uuids": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"}[spec.value]
        assert all(re.fullmatch(kind, v) for v in sample.answers), name
    multiquery = niah_sample(SPECS["niah_multiquery"], random.Random(1), 40, ctx)
    assert ", and " in multiquery.answer_prefix
    distractors = niah_sample(SPECS["niah_multikey_2"], random.Random(1), 30, ctx)
    assert distractors.task_text.count("One of the special magic numbers for") == 31


def test_variable_tracking_chain():
    sample = vt_sample(random.Random(5), 20, TaskContext(4096, (), lambda t: len(t.encode())))
    assert len(sample.answers) == 5 and all(re.fullmatch(r"[A-Z]{5}", v) for v in sample.answers)
    value = re.search(r"assigned the value (\d{5}) in the text above\.$", sample.task_text).group(1)
    task = sample.task_text.split("they are:  ")[-1]  # after the solved example
    lines = [line.strip() for line in task.splitlines() if line.startswith("VAR")]
    assert lines[0] == f"VAR {sample.answers[0]} = {value}"
    assert lines[1:] == [f"VAR {b} = VAR {a}" for a, b in zip(sample.answers, sample.answers[1:])]
    assert sample.task_text.count("Memorize and track") == 2  # the example, then the question


def test_common_and_frequent_words():
    cwe = cwe_sample(random.Random(2), 30, TaskContext(1024))
    assert cwe.task_text.count("Below is a numbered list") == 2  # a solved example, then the question
    listed = re.findall(r"\d+\. (\S+)", cwe.task_text.rsplit("Below is a numbered list", 1)[1])
    counts = {w: listed.count(w) for w in set(listed)}
    assert len(cwe.answers) == 10 and all(counts[w] == 6 for w in cwe.answers)  # below 4096 tokens: 6 repeats
    assert sum(c == 1 for c in counts.values()) == 20
    assert zeta(2.0) == pytest.approx(3.14159265358979**2 / 6, abs=1e-10)
    fwe = fwe_sample(random.Random(2), 400, TaskContext(1000))
    words = fwe.task_text.split("coded words. ")[1].split("\nQuestion")[0].split()
    vocab = coded_vocab(random.Random(0), 19)
    assert len(vocab) == 19 and vocab[0] == "..."
    ranked = sorted({w for w in words if w != "..."}, key=words.count, reverse=True)
    assert ranked[:3] == fwe.answers and words.count("...") == int(400 / zeta(2.0))


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """A small BPE with merges across words, digits and punctuation, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("bpe")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [" ".join(ESSAY[:200]), "One of the special magic numbers for quick-fox is: 1234567."] * 3
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = "<s>[INST] {{ messages[0]['content'] }} [/INST]"
    fast.save_pretrained(root)
    return HFTokenizer(root)


@pytest.mark.parametrize("task", ["niah_single_1", "niah_single_3", "niah_multikey_2", "vt", "fwe"])
@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_prompts_fill_the_length_in_the_models_tokens(task, kind, bpe_tokenizer):
    tok = ByteTokenizer() if kind == "bytes" else bpe_tokenizer
    builder = PromptBuilder(TASKS[task], tok, ESSAY, prefix_ids=[1])
    for length in (1200, 3000):
        prompt = builder.build(length, seed=0, sample=0)
        used = len(prompt.ids) + builder.budget
        assert used <= length and prompt.ids[0] == 1
        # one more haystack unit would not fit: the prompt is as long as it can be (within one unit)
        bigger = len(builder._ids(f"ruler:0:{task}:{length}:0", prompt.haystack + 1, length)[0]) + builder.budget
        assert bigger > length - 2, (task, kind, used, bigger)
        text = tok.decode(prompt.ids[1:])
        assert all(a in text for a in prompt.answers)


def test_prompts_are_a_function_of_their_coordinates():
    builder = PromptBuilder(TASKS["niah_multikey_1"], ByteTokenizer(), ESSAY)
    a, b = builder.build(2000, 7, 3), builder.build(2000, 7, 3)
    assert a.ids == b.ids and a.answers == b.answers
    assert builder.build(2000, 7, 4).answers != a.answers and builder.build(2000, 8, 3).answers != a.answers


def test_chat_template_wraps_the_task_and_keeps_the_answer_prefix_outside(bpe_tokenizer):
    builder = PromptBuilder(TASKS["niah_single_1"], bpe_tokenizer, chat_template=True, prefix_ids=[99])
    text = bpe_tokenizer.decode(builder.build(1500, 0, 0).ids)
    assert text.startswith("<s>[INST] A special magic number is hidden")
    assert "provided text? [/INST] The special magic number for" in text and text.endswith("mentioned in the provided text is")
    with pytest.raises(UserError, match="eval.ruler.chat_template=true needs a tokenizer with a chat template"):
        PromptBuilder(TASKS["niah_single_1"], ByteTokenizer(), chat_template=True).build(1500, 0, 0)


def test_too_short_and_unknown_are_one_line(tmp_path):
    model = tiny_model()
    with pytest.raises(UserError) as err:
        ruler_eval(model, ByteTokenizer(), [300], ["niah_single_1"], n_samples=1, strict=True)
    assert "eval.ruler.lengths: 300 tokens is too short for RULER task niah_single_1" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown task 'niah_single_9'"):
        ruler_eval(model, ByteTokenizer(), [300], ["niah_single_9"])
    # lengths inherited from the perplexity lengths: too-short cells are skipped, not fatal
    result = ruler_eval(model, ByteTokenizer(), [300], ["niah_single_1"], n_samples=1)
    assert result.scores == {"niah_single_1": [None]}


def tiny_model(vocab=257):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


class Oracle(torch.nn.Module):
    """Generates the expected answers of each prompt it is given (read back from the prompt's needles)."""

    def __init__(self, tokenizer):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok = tokenizer

    def generate(self, input_ids, max_new_tokens, **_):
        text = self.tok.decode(input_ids[0].tolist())
        key = re.search(r"magic number for (\S+) mentioned in the provided text is$", text).group(1)
        value = re.search(rf"for {re.escape(key)} is: (\d+)\.", text).group(1)
        new = self.tok.encode(f": {value}.")[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new])], dim=1)


def test_harness_scores_an_oracle_and_writes_outputs(tmp_path):
    from clexlab.evaluation import read_png_data

    tok = ByteTokenizer()
    result = ruler_eval(Oracle(tok), tok, [700, 1500], ["niah_single_1", "niah_single_2"], n_samples=3, essay=lambda: ESSAY)
    assert result.scores == {"niah_single_1": [100.0, 100.0], "niah_single_2": [100.0, 100.0]}
    assert all(a["prompt_tokens"] + 128 <= a["length"] for a in result.answers)
    payload = result.to_dict()
    assert payload["average"] == {"700": 100.0, "1500": 100.0} and payload["tokens_to_generate"]["niah_single_1"] == 128
    report = ruler_report(payload, tmp_path)
    assert report.metrics["eval/ruler@700"] == 100.0 and report.metrics["eval/ruler/niah_single_2@1500"] == 100.0
    assert read_png_data(tmp_path / "ruler_heatmap.png")["grid"][-1] == [100.0, 100.0]
    assert "| niah_single_1 | 100.0 | 100.0 | 100.0 |" in format_ruler_table(payload)


def test_a_real_model_runs_through_generate():
    tok = ByteTokenizer()
    result = ruler_eval(tiny_model(), tok, [600], ["niah_single_1"], n_samples=1, tokens_to_generate=8)
    assert result.scores["niah_single_1"][0] in (0.0, 100.0) and result.tokens_to_generate == {"niah_single_1": 8}
    assert len(result.answers) == 1 and result.answers[0]["prompt_tokens"] <= 592
