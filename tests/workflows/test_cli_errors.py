"""Bad input: one clear line, a non-zero exit, no traceback."""

import pytest

from tests.conftest import run_cli


def assert_one_line_error(res, *fragments):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, res.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_llama7b_without_weights_names_the_key(tmp_path):
    res = run_cli("train.py", "model=llama7b", "clex.max_scale=16", f"hydra.run.dir={tmp_path}", timeout=120)
    assert_one_line_error(res, "model.path=")
    assert not (tmp_path / "checkpoints").exists()


def test_llama7b_cfg_job_prints_the_resolved_config():
    res = run_cli("train.py", "model=llama7b", "clex.max_scale=16", "--cfg", "job", timeout=120)
    assert res.returncode == 0, res.stderr
    for fragment in ("name: llama7b", "train_length: 4096", "max_scale: 16", "time_dt: 0.01", "lr: 2.0e-05", "precision: bf16-mixed", "gradient_checkpointing: true"):
        assert fragment in res.stdout


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("clex.max_scale=0", "clex.max_scale must be an integer >= 1"),
        ("clex.time_dt=0", "clex.time_dt must be > 0"),
        ("clex.act=relu", "clex.act must be one of"),
        ("clex.max_scale=abc", "clex.max_scale"),
        ("eval.lengths=[128,-5]", "eval.lengths must be positive"),
        ("model.path=/nonexistent/dir", "does not exist"),
        ("experiment=extrapolation trainer=ddp trainer.accelerator=cpu trainer.devices=2", "runs in one process"),
    ],
)
def test_bad_values_are_one_line(override, fragment, tmp_path):
    res = run_cli("train.py", *override.split(), f"hydra.run.dir={tmp_path}", timeout=120)
    assert_one_line_error(res, fragment)
    assert not (tmp_path / "base").exists()


def test_eval_without_checkpoint_names_the_key(tmp_path):
    res = run_cli("eval.py", f"hydra.run.dir={tmp_path}", timeout=120)
    assert_one_line_error(res, "ckpt_path")


def test_eval_with_a_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    res = run_cli("eval.py", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'out'}", timeout=120)
    assert_one_line_error(res, "not a readable checkpoint")
