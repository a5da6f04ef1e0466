"""What transformers, safetensors, tokenizers, datasets and Lightning refuse becomes one ``error:`` line (exit 2).

The cases of issue 16 that ended in a Python traceback through Hydra (exit
status 1), and their neighbours, run through the real ``train.py`` /
``eval.py`` entry points, many per process (``helpers.run_many``): a Hugging
Face directory whose ``model.safetensors`` is corrupt or truncated, a
``config.json`` transformers' validators refuse, weights that do not fit their
config or lack tensors (transformers would fill those with random values and
go on), a tokenizer directory that does not load, a model shape transformers
refuses, ``data.batch_size=0``, values of the wrong type for top-level keys,
for a Trainer option and for a callback option, and JSON lines whose text field
is not text.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.reliability.helpers import run_many, write_corpus
from tests.reliability.test_bad_input import TINY, one_error_line


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case once; ``{name: (result, run_dir)}``."""
    from safetensors.torch import load_file, save_file

    from tests.workflows.test_local_checkpoint import save_tiny_hf_model

    tmp = tmp_path_factory.mktemp("library")
    corpus = write_corpus(tmp / "corpus")
    good = tmp / "hf"
    save_tiny_hf_model(good)
    config = json.loads((good / "config.json").read_text())
    weights = (good / "model.safetensors").read_bytes()
    state = load_file(str(good / "model.safetensors"))

    def variant(name: str, **config_changes) -> str:
        directory = tmp / name
        shutil.copytree(good, directory)
        if config_changes:
            (directory / "config.json").write_text(json.dumps({**config, **config_changes}))
        return str(directory)

    corrupt = variant("corrupt")
    (tmp / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage" * 64)
    truncated = variant("truncated")
    (tmp / "truncated" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    refused = variant("refused", hidden_size=31)  # 31 is not a multiple of its 2 heads
    other_shape = variant("other_shape", num_key_value_heads=1)  # valid, but the weights have 2 kv heads
    lacking = variant("lacking")
    save_file({k: v for k, v in state.items() if ".layers.1." not in k}, str(tmp / "lacking" / "model.safetensors"))
    bad_tokenizer = variant("bad_tokenizer")
    tokenizer = json.loads((good / "tokenizer.json").read_text())
    (tmp / "bad_tokenizer" / "tokenizer.json").write_text(json.dumps({**tokenizer, "model": "x"}))
    (tmp / "nulls.jsonl").write_text('{"text": "fine"}\n{"text": null}\n')

    hf = ["model.tokenizer=hf"]
    cases = {
        "corrupt_weights": ([f"model.path={corrupt}", *hf], "train.py"),
        "truncated_weights_eval": ([f"model.path={truncated}", "eval.tasks=[ppl]"], "eval.py"),
        "config_refused": ([f"model.path={refused}", *hf], "train.py"),
        "weights_other_shape_eval": ([f"model.path={other_shape}", "eval.tasks=[ppl]"], "eval.py"),
        "weights_lacking": ([f"model.path={lacking}", *hf], "train.py"),
        "tokenizer_broken": ([f"model.path={bad_tokenizer}", *hf], "train.py"),
        "shape_refused": (["model.hidden_size=30"], "train.py"),  # 4 heads
        "batch_size_zero": (["data.batch_size=0"], "train.py"),
        "seed_wrong_type": (["seed=abc"], "train.py"),
        "node_wrong_type": (["clex=5"], "train.py"),
        "trainer_wrong_type": (["trainer.max_steps=abc"], "train.py"),
        "callback_wrong_type": (["callbacks.last_checkpoint.every_n_train_steps=abc"], "train.py"),
        "jsonl_text_not_text": (["data=text", f"data.corpus.train_files=[{tmp / 'nulls.jsonl'}]"], "train.py"),
    }
    payload = []
    for name, (args, script) in cases.items():
        common = [*TINY, *corpus] if script == "train.py" else ["eval.max_tokens=64", "eval.multiples=[1]"]
        if name == "jsonl_text_not_text":
            common = TINY
        payload.append({
            "script": script,
            "args": [*common, *args, f"hydra.run.dir={tmp / 'runs' / name}"],
            "env": {"CLEXLAB_DEBUG": ""},
        })
    out = run_many(payload, timeout=600)
    return {name: (res, tmp / "runs" / name) for name, res in zip(cases, out)}


@pytest.mark.parametrize(
    "name,fragments",
    [
        ("corrupt_weights", ["corrupt/model.safetensors is damaged or truncated", "SafetensorError", "download"]),
        ("truncated_weights_eval", ["truncated/model.safetensors is damaged or truncated", "not fully covered"]),
        ("config_refused", ["transformers refuses", "refused/config.json", "hidden size (31)"]),
        ("weights_other_shape_eval", ["model.path=", "cannot load its weights", "do not match config.json"]),
        ("weights_lacking", ["lack 9 tensors", "random values"]),
        ("tokenizer_broken", ["cannot load a tokenizer from", "bad_tokenizer", "ModelUntagged"]),
        # The preflight's schema catches these before the library sees them (test_whole_config.py);
        # the library's own errors behind them are translated too (the tests below this one).
        ("shape_refused", ["model.hidden_size=30 is not divisible by model.num_heads=4"]),
        ("batch_size_zero", ["data.batch_size must be >= 1, got 0"]),
        ("seed_wrong_type", ["seed must be an integer", "'abc'"]),
        ("node_wrong_type", ["clex is a config node, got 5", "clex.<name>=<value>"]),
        ("trainer_wrong_type", ["trainer.max_steps must be int, got 'abc'"]),
        ("callback_wrong_type", ["callbacks.last_checkpoint.every_n_train_steps must be int, got 'abc'"]),
        ("jsonl_text_not_text", ["nulls.jsonl record 2", "NoneType", "data.corpus.text_field"]),
    ],
)
def test_library_errors_are_one_line_exit_2(results, name, fragments):
    res, run_dir = results[name]
    line = one_error_line(res)  # exactly one "error:" line, no traceback
    assert res["rc"] == 2, res["stderr"][-2000:]
    for fragment in fragments:
        assert fragment in line, line
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()


def test_a_shape_transformers_refuses_is_one_line_behind_the_schema_too():
    """The builder's own translation, for a shape the preflight let through (a model node built by hand)."""
    from clexlab.models.builder import build_tiny
    from clexlab.utils.errors import UserError

    sizes = {"name": "tiny", "hidden_size": 30, "num_layers": 1, "num_heads": 4, "num_kv_heads": 4,
             "intermediate_size": 64, "train_length": 32, "head_dim": None}
    with pytest.raises(UserError, match=r"transformers (refuses|cannot build) this model=tiny|transformers cannot build"):
        build_tiny(sizes, 257)


def test_values_lightning_refuses_are_one_line_behind_the_schema_too():
    """``workflows.common.build``: a TypeError/ValueError a class raises becomes one line naming the node."""
    from omegaconf import OmegaConf

    from clexlab.utils.errors import UserError
    from clexlab.workflows.common import build

    node = OmegaConf.create({"_target_": "clexlab.callbacks.LastCheckpoint", "dirpath": "/tmp/x", "every_n_train_steps": "abc"})
    with pytest.raises(UserError, match=r"callbacks.last_checkpoint: ValueError"):
        build(node, "callbacks.last_checkpoint")


def test_user_error_messages_are_one_line():
    from clexlab.utils.errors import UserError, describe

    assert str(UserError("first\n  second\n\nthird")) == "first second third"
    err = ValueError("Class validation error:\n    ValueError: the news is on line two")
    assert describe(err) == "ValueError: Class validation error: ValueError: the news is on line two"
    assert describe(KeyError("x" * 500), limit=40).endswith("...") and len(describe(KeyError("x" * 500), limit=40)) < 60
