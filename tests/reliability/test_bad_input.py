"""Bad input to train.py: one line ``error: ...``, a non-zero exit, no traceback, nothing overwritten.

The command lines run through the real Hydra entry point, many per process
(``helpers.run_many``), to keep the suite fast. Cases already covered by
``tests/workflows/test_cli_errors.py`` (max_scale 0, time_dt 0, act relu,
max_scale=abc, a negative eval length, a missing model.path, llama7b without
weights, eval.py without/with a corrupt checkpoint) are not repeated here.
"""

import json

import pytest
import torch

from tests.reliability.helpers import run_many, write_corpus

TINY = [
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "data.val_max_windows=4",
    "model.train_length=32",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "clex.max_scale=4",
    "logger=none",
    "eval.multiples=[1,2]",
    "eval.max_tokens=64",
    "callbacks.long_context_eval.multiples=[1,2]",
    "callbacks.long_context_eval.max_tokens=64",
]


def fake_lightning_ckpt(path, hidden_size):
    """What preflight reads of a train.py checkpoint: hyper-parameters and the resume state's keys."""
    model = {"name": "tiny", "train_length": 32, "hidden_size": hidden_size, "num_layers": 2, "num_heads": 4,
             "num_kv_heads": 4, "intermediate_size": 64}
    torch.save({"hyper_parameters": {"model": model, "rope": {"name": "clex"}}, "state_dict": {},
                "optimizer_states": [], "loops": {}, "global_step": 4}, path)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case once; ``{name: (result, run_dir)}``."""
    tmp = tmp_path_factory.mktemp("bad")
    corpus = write_corpus(tmp / "corpus")
    (tmp / "file.txt").write_text("x")
    (tmp / "no_config").mkdir()
    (tmp / "bert").mkdir()
    (tmp / "bert" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (tmp / "empty").mkdir()
    for i in range(3):
        (tmp / "empty" / f"{i}.txt").write_text("")
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 20)
    (tmp / "latin1.txt").write_bytes("caf\xe9 cr\xe8me br\xfbl\xe9e ".encode("latin-1") * 50)
    (tmp / "bad.jsonl").write_bytes(b"\x00\x01{not json")
    fake_lightning_ckpt(tmp / "wide.ckpt", hidden_size=64)
    fake_lightning_ckpt(tmp / "same.ckpt", hidden_size=32)
    good = (tmp / "same.ckpt").read_bytes()
    (tmp / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    taken = tmp / "taken"
    (taken / "checkpoints").mkdir(parents=True)
    (taken / "results.json").write_text('{"ppl": {}}')
    (taken / "checkpoints" / "last.ckpt").write_bytes(b"precious")

    cases = {
        "unknown_group_option": ["rope=bogus"],
        "wrong_type_float": ["optim.lr=fast"],
        "wrong_type_bool": ["train.skip_nonfinite=maybe"],
        "wrong_type_train_length": ["model.train_length=abc"],
        "eval_multiple_not_positive": ["eval.multiples=[0,2]"],
        "eval_longer_than_data": [*corpus, "eval.lengths=[4096]", "eval.max_tokens=4096"],
        "model_path_not_a_directory": [f"model.path={tmp / 'file.txt'}"],
        "model_path_without_config": [f"model.path={tmp / 'no_config'}"],
        "model_not_rope": [f"model.path={tmp / 'bert'}"],
        "ckpt_other_shape": [f"ckpt_path={tmp / 'wide.ckpt'}"],
        "ckpt_truncated": [f"ckpt_path={tmp / 'truncated.ckpt'}"],
        "ckpt_missing": [f"ckpt_path={tmp / 'nothing.ckpt'}"],
        "data_path_missing": ["data=text", f"data.corpus.train_files=[{tmp / 'missing'}/*.txt]"],
        "data_files_empty": ["data=text", f"data.corpus.train_files=[{tmp / 'empty'}/*.txt]"],
        "data_binary": ["data=text", f"data.corpus.train_files=[{tmp / 'binary.txt'}]"],
        "data_not_utf8": ["data=text", f"data.corpus.train_files=[{tmp / 'latin1.txt'}]"],
        "data_bad_jsonl": ["data=text", f"data.corpus.train_files=[{tmp / 'bad.jsonl'}]"],
        "seq_longer_than_split": [*corpus, "model.train_length=5000"],
        "too_many_gpus": ["trainer.accelerator=cuda", "trainer.devices=64"],
        "devices_zero": ["trainer.devices=0"],
        "run_dir_taken": [*corpus],
        "debug_shows_traceback": ["optim.lr=fast"],
    }
    run_dirs = {name: (taken if name == "run_dir_taken" else tmp / "runs" / name) for name in cases}
    payload = [
        {
            "args": [*TINY, *args, f"hydra.run.dir={run_dirs[name]}"],
            "env": {"CLEXLAB_DEBUG": "1"} if name == "debug_shows_traceback" else {"CLEXLAB_DEBUG": ""},
        }
        for name, args in cases.items()
    ]
    out = run_many(payload)
    return {name: (res, run_dirs[name], tmp) for name, res in zip(cases, out)}


def one_error_line(res):
    assert res["rc"] not in (0, 99), res["stderr"][-3000:]
    assert "Traceback" not in res["stderr"], res["stderr"][-3000:]
    lines = [line for line in res["stderr"].splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res["stderr"][-3000:]
    return lines[0]


@pytest.mark.parametrize(
    "name,fragments",
    [
        ("wrong_type_float", ["optim.lr", "fast"]),
        ("wrong_type_bool", ["train.skip_nonfinite", "maybe"]),
        ("wrong_type_train_length", ["model.train_length", "could not be converted to Integer"]),
        ("eval_multiple_not_positive", ["eval.multiples must be positive"]),
        ("eval_longer_than_data", ["eval (lengths [4096]", "test split", "lower the eval lengths"]),
        ("model_path_not_a_directory", ["is not a directory"]),
        ("model_path_without_config", ["has no config.json"]),
        ("model_not_rope", ["'bert' model without RoPE"]),
        ("ckpt_other_shape", ["model.hidden_size=64", "this config has 32", "init_from"]),
        ("ckpt_truncated", ["not a readable checkpoint", "truncated"]),
        ("ckpt_missing", ["ckpt_path=", "does not exist"]),
        ("data_path_missing", ["no file matches", "missing"]),
        ("data_files_empty", ["train split", "is empty", "all empty"]),
        ("data_binary", ["binary.txt looks binary"]),
        ("data_not_utf8", ["latin1.txt is not UTF-8", "offset"]),
        ("data_bad_jsonl", ["bad.jsonl is not valid JSON lines"]),
        ("seq_longer_than_split", ["fewer than one window of model.train_length=5000"]),
        ("too_many_gpus", ["trainer."]),
        ("devices_zero", ["trainer.devices must be >= 1"]),
        ("run_dir_taken", ["already holds a run", "ckpt_path="]),
    ],
)
def test_bad_input_is_one_line(results, name, fragments):
    res, run_dir, _ = results[name]
    line = one_error_line(res)
    for fragment in fragments:
        assert fragment in line, line
    if name != "run_dir_taken":
        assert not (run_dir / "checkpoints").exists()  # nothing written where a run would go
        assert not (run_dir / "results.json").exists()


def test_unknown_config_group_option_is_hydras_message_without_traceback(results):
    res, run_dir, _ = results["unknown_group_option"]
    assert res["rc"] != 0
    assert "Could not find 'rope/bogus'" in res["stderr"] and "Traceback" not in res["stderr"]
    assert not run_dir.exists()  # Hydra fails while composing, before it makes the run directory


def test_a_taken_run_directory_is_left_untouched(results):
    res, run_dir, _ = results["run_dir_taken"]
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"precious"
    assert json.loads((run_dir / "results.json").read_text()) == {"ppl": {}}


def test_debug_env_shows_the_traceback(results):
    res, _, _ = results["debug_shows_traceback"]
    assert res["rc"] != 0 and "Traceback" in res["stderr"]
