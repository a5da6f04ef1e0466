"""Every rope option composes, trains two steps and evaluates; a multirun ends in one summary."""

import json

import pytest

from tests.conftest import FAST, run_cli

TWO_STEPS = [*FAST, "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=none"]


@pytest.mark.parametrize(
    "overrides,label",
    [
        (["rope=none"], "none"),
        (["rope=pi", "rope.factor=4"], "pi-x4"),
        (["rope=ntk", "rope.factor=4"], "ntk-x4"),
        (["rope=dynamic_ntk"], "dynamic_ntk-x2"),
        (["rope=yarn", "rope.factor=4"], "yarn-x4"),
        (["rope=yarn", "rope.factor=4", "train.position_sampling=true"], "yarn-x4+pos"),
        (["rope=clex", "clex.freeze=true"], "clex-frozen"),
    ],
)
def test_each_rope_option_trains_and_evaluates(compose_train, tmp_path, overrides, label):
    from clexlab.workflows.train import train

    payload = train(compose_train(*TWO_STEPS, *overrides))
    assert payload["method"] == label
    assert set(payload["ppl"]) == {"32", "64", "128", "256"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method"] == label and saved["global_step"] == 2


def test_bad_rope_factor_is_one_line(tmp_path):
    res = run_cli("train.py", "rope=pi", "rope.factor=0.5", f"hydra.run.dir={tmp_path}", timeout=120)
    assert res.returncode == 2 and "rope.factor must be >= 1" in res.stderr and "Traceback" not in res.stderr


def test_multirun_writes_one_summary(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli(
        "train.py", "-m", "rope=none,clex", "seed=0,1", *TWO_STEPS, f"hydra.sweep.dir={sweep}", timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    md = (sweep / "summary.md").read_text()
    assert "| clex | 2 |" in md and "| none | 2 |" in md and "±" in md
    summary = json.loads((sweep / "summary.json").read_text())
    assert set(summary["methods"]) == {"clex", "none"}
    assert (sweep / "ppl_vs_length.png").stat().st_size > 5000


def test_extrapolation_protocol_continues_every_method_from_one_base(compose_train, tmp_path):
    from clexlab.workflows.extrapolation import run_extrapolation

    cfg = compose_train(
        *TWO_STEPS,
        "experiment=extrapolation",
        "protocol.base_steps=2",
        "protocol.stage2_steps=1",
        "trainer.val_check_interval=1",
        "clex.max_scale=4",
        "eval.multiples=[1,2,4]",
        "callbacks.long_context_eval.multiples=[1,2]",
    )
    cfg.protocol.methods = cfg.protocol.methods[:2] + cfg.protocol.methods[-1:]  # none, ntk@inference, clex-frozen
    run_extrapolation(cfg)
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["methods"]) == {"base", "none", "ntk-x16@inference", "clex-frozen"}
    assert summary["lengths"] == [32, 64, 128]
    base = json.loads((run / "base" / "results.json").read_text())
    frozen = json.loads((run / "clex-frozen" / "results.json").read_text())
    inference = json.loads((run / "ntk-x16@inference" / "results.json").read_text())
    assert base["global_step"] == 2 and frozen["global_step"] == 1 and inference["global_step"] == 0
    assert inference["rope"] == "ntk" and inference["rope_factor"] == 16.0
    assert (run / "ppl_vs_length.png").is_file()


def test_passkey_grid_during_training_is_logged(compose_train, tmp_path):
    from clexlab.workflows.train import train

    cfg = compose_train(
        *FAST,
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "callbacks.passkey_eval.every_n_steps=1",
        "callbacks.passkey_eval.lengths=[256,320]",
        "callbacks.passkey_eval.depths=[0.5]",
        "callbacks.passkey_eval.samples=1",
    )
    train(cfg)
    header, *rows = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/passkey@256" in header and "val/passkey@320" in header
    column = header.split(",").index("val/passkey@256")
    values = [r.split(",")[column] for r in rows if r.split(",")[column]]
    assert len(values) == 2 and all(0.0 <= float(v) <= 1.0 for v in values)  # steps 1 and 2


def test_protocol_warmup_stage_trains_first_under_its_own_overrides_and_the_base_starts_from_it(compose_train, tmp_path, monkeypatch):
    from clexlab.workflows import extrapolation

    cfg = compose_train(
        *TWO_STEPS,
        "experiment=extrapolation",
        "protocol.base_steps=1",
        "protocol.stage2_steps=1",
        "trainer.val_check_interval=1",
        "eval.multiples=[1]",
        "callbacks.long_context_eval.multiples=[1]",
        "+protocol.warmup.steps=2",
        "+protocol.warmup.overrides={model:{train_length:16},data:{batch_size:2}}",
    )
    cfg.protocol.methods = cfg.protocol.methods[:1]  # none
    seen = []  # (output dir, train length, batch size, init_from) of every stage, in order
    train = extrapolation.train
    monkeypatch.setattr(extrapolation, "train", lambda stage: seen.append(
        (stage.paths.output_dir, stage.model.train_length, stage.data.batch_size, stage.init_from)) or train(stage))
    extrapolation.run_extrapolation(cfg)
    run = tmp_path / "run"
    warm, base, none = seen
    assert warm == (str(run / "warmup"), 16, 2, None)
    assert base == (str(run / "base"), 32, 4, str(run / "warmup" / "checkpoints" / "last.ckpt"))
    assert none[:3] == (str(run / "none"), 32, 4) and none[3] == str(run / "base" / "checkpoints" / "last.ckpt")
    assert json.loads((run / "warmup" / "results.json").read_text())["global_step"] == 2
    assert set(json.loads((run / "summary.json").read_text())["methods"]) == {"base", "none"}  # the warm-up is no method


def test_protocol_warmup_without_overrides_or_with_bad_steps(compose_train, monkeypatch, tmp_path):
    from clexlab.utils.errors import UserError
    from clexlab.workflows import extrapolation

    calls = []  # (directory name, steps, overrides, init_from) of every stage
    monkeypatch.setattr(extrapolation, "_stage", lambda cfg, out, steps, rope, *a, overrides=None, init_from=None, **k: (
        calls.append((out.name, steps, overrides, init_from)) or {"checkpoint": f"{out.name}.ckpt"}))
    cfg = compose_train(*TWO_STEPS, "experiment=extrapolation", "+protocol.warmup.steps=3")
    assert extrapolation._base(cfg, tmp_path) == ("base.ckpt", [])
    assert calls == [("warmup", 3, None, None), ("base", cfg.protocol.base_steps, None, "warmup.ckpt")]
    cfg = compose_train(*TWO_STEPS, "experiment=extrapolation", "+protocol.warmup.steps=0")
    with pytest.raises(UserError, match=r"protocol.warmup.steps must be an integer >= 1, got 0"):
        extrapolation._base(cfg, tmp_path)
