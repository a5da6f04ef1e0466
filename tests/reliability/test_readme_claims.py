"""README claims that had no test that could fail: each one here would break if the claim did.

- RNG states after a resume: a run whose model draws dropout masks and whose callback
  draws from Python's, numpy's and torch's generators continues those draws exactly.
- ``train.skip_nonfinite``: a skipped step leaves every weight and every AdamW moment
  (and per-parameter step count) as it was, while the LR schedule moves on.
- The CLEX ODE's own optimizer group: ``clex.lr``, no weight decay, and one AdamW
  step moves it by exactly that learning rate.
- Released models with ``model.clex_solver=rk4``: the released integrator, to float32 rounding.
- W&B: the evaluation tables and images reach a real offline ``WandbLogger`` run directory.
- SIGTERM: the run finishes its step, saves ``last.ckpt`` and exits 143 (two ranks:
  ``tests/distributed/test_sigterm.py``). Expected to fail until ``LastCheckpoint``
  installs its handler after Lightning's (see that file).
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from tests.reliability.helpers import OptimizerWatch, read_draws, write_corpus

SHORT = [
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.batch_size=4",
    "data.val_max_windows=4",
    "model.train_length=32",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "clex.max_scale=4",
    "optim.warmup_steps=1",
    "logger=none",
    "eval.multiples=[1,2]",
    "eval.max_tokens=64",
    "callbacks.long_context_eval.multiples=[1,2]",
    "callbacks.long_context_eval.max_tokens=64",
]


# ------------------------------------------------------------------------------ RNG states
def test_a_resumed_run_continues_the_global_random_streams(compose_train, tmp_path):
    from clexlab.workflows.train import train

    def run(name, *extra):
        draws = tmp_path / f"{name}.jsonl"
        train(compose_train(
            *SHORT, *write_corpus(tmp_path / "corpus", 6000, 600),
            "trainer.max_steps=6", "trainer.val_check_interval=6",
            "+model.config_overrides.attention_dropout=0.3",  # the model itself draws from torch's RNG
            "+callbacks.draws._target_=tests.reliability.helpers.GlobalRNGDraws", f"+callbacks.draws.path={draws}",
            "+callbacks.snap._target_=lightning.pytorch.callbacks.ModelCheckpoint",
            f"+callbacks.snap.dirpath={tmp_path / name / 'snap'}", "+callbacks.snap.every_n_train_steps=3",
            "+callbacks.snap.save_top_k=-1", "+callbacks.snap.filename='step-{step}'",
            "+callbacks.snap.auto_insert_metric_name=false",
            f"paths.output_dir={tmp_path / name}", *extra,
        ))
        return read_draws(draws)

    full = run("full")
    snapshot = tmp_path / "full" / "snap" / "step-3.ckpt"
    assert "RNGStateCheckpoint" in torch.load(snapshot, weights_only=True)["callbacks"]
    resumed = run("resumed", f"ckpt_path={snapshot}")
    assert sorted(resumed) == [3, 4, 5]
    for step in (3, 4, 5):
        for stream in ("python", "numpy", "torch"):
            assert resumed[step][stream] == full[step][stream], (step, stream)
        assert resumed[step]["loss"] == pytest.approx(full[step]["loss"], abs=1e-6)  # the same dropout masks

    # Without the callback, the same resume draws other numbers (the comparison above can fail).
    control = run("control", f"ckpt_path={snapshot}", "~callbacks.rng_state")
    assert all(control[s]["torch"] != full[s]["torch"] and control[s]["python"] != full[s]["python"] for s in (3, 4, 5))
    assert control[3]["loss"] != pytest.approx(full[3]["loss"], abs=1e-6)


# ------------------------------------------------------------------------------ skip_nonfinite
def test_a_skipped_nonfinite_step_leaves_weights_and_adamw_moments_as_they_were(compose_train, tmp_path, monkeypatch):
    from clexlab.workflows.train import train
    from tests.reliability.test_nonfinite import inject

    inject(monkeypatch, at_call=2, kind="loss")  # the loss of step 2 is NaN
    OptimizerWatch.records = []
    payload = train(compose_train(
        *SHORT, *write_corpus(tmp_path / "corpus", 4000, 600), "trainer.max_steps=4", "trainer.val_check_interval=4",
        "trainer.gradient_clip_val=null", "train.skip_nonfinite=true",
        "+callbacks.watch._target_=tests.reliability.helpers.OptimizerWatch",
    ))
    assert payload["global_step"] == 4
    steps = {r["step"]: r for r in OptimizerWatch.records}
    assert sorted(steps) == [0, 1, 2, 3]
    moved = steps[1]["weights"] | steps[3]["weights"]  # normal steps move weights and moments (the ODE: at t > 1)
    assert len(moved) >= 20 and moved == steps[1]["moments"] | steps[3]["moments"]
    skipped = steps[2]
    assert skipped["weights"] == set() and skipped["moments"] == set() and skipped["counts"] == set()
    assert steps[3]["lr"] != steps[2]["lr"] != steps[1]["lr"]  # the schedule moved on through the skip


# ------------------------------------------------------------------------------ the ODE's group
def test_the_ode_has_its_own_group_without_decay_and_steps_by_clex_lr():
    from types import SimpleNamespace

    from clexlab.models import LongContextLM
    from clexlab.models.loss import causal_lm_nll
    from tests.conftest import TINY_CLEX, TINY_MODEL

    torch.manual_seed(0)
    optim = {"lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.95], "warmup_steps": 0, "min_lr_ratio": 0.1}
    module = LongContextLM(model=dict(TINY_MODEL), rope="clex", clex={**TINY_CLEX, "lr": 3e-4}, optim=optim, vocab_size=257)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)  # what configure_optimizers reads of the trainer
    optimizer = module.configure_optimizers()["optimizer"]
    ode = module.rope_parameters()
    groups = [g for g in optimizer.param_groups if any(p is ode[0] for p in g["params"])]
    assert len(groups) == 1
    group = groups[0]
    assert {id(p) for p in group["params"]} == {id(p) for p in ode}  # the ODE, and only the ODE
    assert group["lr"] == pytest.approx(3e-4) and group["weight_decay"] == 0.0
    decayed = [g for g in optimizer.param_groups if g["weight_decay"] == 0.1]
    assert decayed and all(g["lr"] == pytest.approx(1e-3) for g in decayed)

    # One step at t = 3, where the ODE is in the graph (a trained-looking ODE, so both its matrices get gradients).
    with torch.no_grad():
        module.clex_rope.dynamics.down_proj.normal_(0.0, 0.3)
    ids = torch.randint(0, 257, (2, 32))
    with module.rope_method.scale(module.model, 3):
        nll, count = causal_lm_nll(module.model, ids, ids, torch.arange(0, 96, 3).expand(2, -1))
    (nll / count).backward()
    before = [p.detach().clone() for p in ode]
    grads = [p.grad.clone() for p in ode]
    matrix = next(p for g in decayed for p in g["params"])
    matrix_before, matrix_grad = matrix.detach().clone(), matrix.grad.clone()
    optimizer.step()
    eps = optimizer.defaults["eps"]
    for p, p0, g in zip(ode, before, grads):
        # AdamW's first step moves each weight by lr * g / (|g| + eps): about clex.lr where |g| >> eps; no decay term.
        assert (g.abs() > 1e-6).float().mean() > 0.5
        assert_close(p.detach() - p0, -3e-4 * g / (g.abs() + eps), rtol=1e-3, atol=1e-7)  # atol: float32 resolution of the weights
    # A decayed weight: the model's lr, and decay lr * wd * w on top.
    expected = matrix_before * (1 - 1e-3 * 0.1) - 1e-3 * matrix_grad / (matrix_grad.abs() + eps)
    assert_close(matrix.detach(), expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ rk4 = the released integrator
def test_released_model_with_clex_solver_rk4_runs_the_released_integrator(tmp_path):
    from clexlab.workflows.evaluate import subject_from_directory
    from tests.models.test_official_clex import BASE, released_table, tiny_clex_llama, write_released_dir

    model, rope = tiny_clex_llama()
    directory = write_released_dir(model, rope, tmp_path / "clex")
    inv_freq = 1.0 / (BASE ** (torch.arange(0, 16, 2).float() / 16))
    released = released_table(rope.dynamics.up_proj.detach(), rope.dynamics.down_proj.detach(), inv_freq)
    tables = {}
    for solver in ("fast", "rk4"):  # through eval.py's path: model.clex_solver
        subject = subject_from_directory({"path": str(directory), "clex_solver": solver, "tokenizer": "bytes"})
        tables[solver] = subject.model.model.rotary_emb.frequency_table()
    rk4_gap = (tables["rk4"] - released).abs().max().item()
    fast_gap = (tables["fast"] - released).abs().max().item()
    print(f"max |log-frequency - released rk4|: rk4 {rk4_gap:.2g}, fast {fast_gap:.2g}")
    assert rk4_gap <= 2e-6  # float32 rounding of the same integrator (the formula is arranged differently)
    assert fast_gap > 5 * rk4_gap  # the default solver is close, but not the released integrator
    assert (released[-1] - released[0]).abs().max() > 0.1  # the ODE moved the frequencies


# ------------------------------------------------------------------------------ W&B offline
def test_eval_tables_and_figures_reach_a_real_offline_wandb_run(compose_train, tmp_path, monkeypatch):
    import wandb

    from clexlab.evaluation import read_png_data
    from clexlab.workflows.evaluate import evaluate
    from tests.workflows.test_eval_suite import SMALL, save_fake_checkpoint

    monkeypatch.setenv("WANDB_MODE", "offline")
    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    cfg = compose_train(
        f"ckpt_path={tmp_path / 'tiny.ckpt'}", *SMALL, "eval.lengths=[32,64]", "eval.passkey.lengths=[256]",
        "logger=wandb", config_name="eval",
    )
    try:
        payload = evaluate(cfg)
    finally:
        wandb.finish()
    runs = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    files = Path(runs[0]) / "files" / "media"

    def table(key):
        (path,) = glob.glob(str(files / "table" / f"{key}_*.table.json"))
        return json.loads(Path(path).read_text())

    ppl = table("test/ppl_table")
    assert ppl["columns"] == ["length", "multiple", "ppl"]
    assert [[int(n), float(x)] for n, _, x in ppl["data"]] == [[int(n), v] for n, v in payload["ppl"].items()]
    passkey = table("eval/passkey_table")
    assert passkey["columns"] == ["length", "depth 0", "depth 1"]
    assert passkey["data"] == [[n, *row] for n, row in zip(payload["passkey"]["lengths"], payload["passkey"]["accuracy"])]
    for name in ("ppl_vs_length", "passkey_heatmap", "clex_frequencies"):
        (image,) = glob.glob(str(files / "images" / "eval" / f"{name}_*.png"))
        if name == "ppl_vs_length":  # the figure carries its numbers: the same ones
            assert read_png_data(image)["ppl"] == [payload["ppl"][n] for n in sorted(payload["ppl"], key=int)]
        assert Path(image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The scalar metrics are in the run's record file.
    record = next(Path(runs[0]).glob("run-*.wandb")).read_bytes()
    assert b"test/ppl@64" in record and b"eval/passkey@256" in record


# ------------------------------------------------------------------------------ SIGTERM
def test_sigterm_saves_and_exits_143(tmp_path):
    import signal

    from tests.conftest import run_cli
    from tests.reliability.helpers import FAULT

    res = run_cli(
        "train.py", *SHORT, *write_corpus(tmp_path / "corpus", 4000, 600), "trainer.max_steps=6",
        "trainer.val_check_interval=6", FAULT, f"hydra.run.dir={tmp_path / 'run'}",
        env={"CLEXLAB_TEST_SIGTERM_AT": "2", "CLEXLAB_DEBUG": ""}, timeout=300,
    )
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not (tmp_path / "run" / "results.json").exists()
    assert "stopped by SIGTERM after step 3" in res.stderr and "ckpt_path=" in res.stderr
    assert res.returncode == 128 + signal.SIGTERM, res.stderr[-3000:]
