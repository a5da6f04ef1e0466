"""In-process pieces of multi-process training: the multirun command line, clean-up, clipping, configs."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from clexlab.models.sharding import all_reduce_grads, clip_grad_norm_mixed, is_sharded
from clexlab.utils.distributed import LAUNCH_ENV, distributed_job, single_run_argv


def test_single_run_argv_keeps_config_flags_and_the_jobs_own_overrides():
    argv = ["/repo/train.py", "-m", "-cn", "train", "--config-path=conf", "seed=0,1", "trainer=ddp", "trainer.devices=2"]
    job = ["seed=1", "trainer=ddp", "trainer.devices=2"]
    assert single_run_argv(argv, job) == [
        "/repo/train.py", "-cn", "train", "--config-path=conf", "seed=1", "trainer=ddp", "trainer.devices=2", "hydra.mode=RUN",
    ]
    assert "-m" not in single_run_argv(["train.py", "--multirun", "seed=0,1"], ["seed=0"])


def test_distributed_job_restores_the_launch_environment_and_argv(monkeypatch):
    for key in LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # set by the user (torchrun, SLURM): kept
    argv = list(sys.argv)
    with distributed_job():
        # What Lightning's launcher leaves behind; LOCAL_RANK would make the next job wait for ranks.
        os.environ.update(LOCAL_RANK="0", MASTER_PORT="12345", WORLD_SIZE="2", NODE_RANK="0", MASTER_ADDR="127.0.0.1")
    assert all(key not in os.environ for key in ("LOCAL_RANK", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK"))
    assert os.environ["MASTER_ADDR"] == "10.0.0.1"
    assert sys.argv == argv


def test_clip_by_global_norm_matches_torch_for_plain_gradients():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for pa, pb in zip(a, b):
        pa.grad = torch.randn_like(pa) * 4
        pb.grad = pa.grad.clone()
    total = clip_grad_norm_mixed(a, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(b, 1.0)
    assert total == pytest.approx(float(expected), rel=1e-6) and total > 1.0
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa.grad, pb.grad)
    all_reduce_grads(a)  # no process group: nothing to average, nothing changed
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa.grad, pb.grad)


def test_t1_step_drops_the_zero_ode_gradient_and_other_steps_keep_it(tiny_module):
    from clexlab.curriculum import ScaleSample

    ode = tiny_module.rope_parameters()
    assert len(ode) == 2 and not is_sharded(tiny_module.model)
    for t, kept in ((1, False), (3, True)):
        for p in ode:
            p.grad = torch.zeros_like(p)
        tiny_module.last_draw = ScaleSample(t=t, positions=torch.arange(4))
        tiny_module.on_before_optimizer_step(None)
        assert all((p.grad is not None) == kept for p in ode), t


@pytest.mark.parametrize(("choice", "strategy"), [("ddp", "DDPStrategy"), ("fsdp", "ModelParallelStrategy")])
def test_trainer_configs_build_lightning_strategies(compose_train, choice, strategy):
    from hydra.utils import instantiate

    from clexlab.utils.errors import UserError
    from clexlab.workflows.train import _check_strategy

    cfg = compose_train(f"trainer={choice}", "trainer.accelerator=cpu", "trainer.devices=2", "logger=none")
    trainer = instantiate(cfg.trainer, callbacks=[], logger=False)
    assert type(trainer.strategy).__name__ == strategy
    assert trainer.num_devices == 2
    _check_strategy(trainer)
    if choice == "fsdp":
        cfg = compose_train("trainer=fsdp", "trainer.accelerator=cpu", "trainer.strategy.save_distributed_checkpoint=true")
        with pytest.raises(UserError, match="save_distributed_checkpoint"):
            _check_strategy(instantiate(cfg.trainer, callbacks=[], logger=False))
