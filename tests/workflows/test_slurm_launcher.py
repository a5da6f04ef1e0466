"""Multiruns through the submitit launcher: SLURM job shape follows the trainer; local jobs really run."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import CONF_DIR, FAST, run_cli

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install hydra-submitit-launcher")
submitit = pytest.importorskip("submitit")


def _compose(tmp_path, *overrides: str):
    """conf/train.yaml with its hydra node (the launcher lives there), sweep dir in tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import clexlab.utils.resolvers  # noqa: F401

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                          return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_slurm_launcher_follows_the_trainer(tmp_path):
    cfg = _compose(tmp_path, "hydra/launcher=submitit_slurm", "trainer.devices=4", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    # Lightning's SLURMEnvironment insists on ntasks-per-node == devices and nodes == num_nodes.
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.partition is None and launcher.account is None
    assert launcher.timeout_min >= 60 and launcher.cpus_per_task >= 1 and launcher.mem_per_gpu
    assert launcher.mem_gb is None and launcher.mem_per_cpu is None  # SLURM accepts one of the three
    assert launcher.submitit_folder == f"{tmp_path / 'sweep'}/.submitit/%j"
    # The defaults follow too: one GPU, one node.
    one = _compose(tmp_path, "hydra/launcher=submitit_slurm").hydra.launcher
    assert (one.nodes, one.tasks_per_node, one.gpus_per_node) == (1, 1, 1)


def test_slurm_launcher_writes_the_sbatch_script(tmp_path, monkeypatch):
    """The plugin's own launch() turns the config into an sbatch script (stopped before sbatch runs)."""
    from hydra.utils import instantiate

    cfg = _compose(tmp_path, "hydra/launcher=submitit_slurm", "trainer.devices=4", "trainer.num_nodes=2",
                   "hydra.launcher.partition=gpu", "hydra.launcher.account=lab")
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    captured = {}

    class Stop(Exception):
        pass

    def fake_map_array(self, fn, *iterables):
        captured["executor"] = self
        raise Stop

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", fake_map_array)
    # submitit's SLURM executor only starts where `srun` is on PATH; this one is never run.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Stop):
        launcher.launch([["rope=clex"], ["rope=none"]], initial_job_idx=0)
    script = captured["executor"]._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for flag in ("--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--mem-per-gpu=64G",
                 "--time=1440", "--partition=gpu", "--account=lab", "--signal=TERM@120"):
        assert f"#SBATCH {flag}\n" in script, script
    # SIGTERM (clexlab saves last.ckpt and stops), not submitit's USR2; one memory option only.
    assert "USR2" not in script and "--mem=" not in script and "srun " in script


def test_lightning_takes_its_ranks_from_srun(monkeypatch):
    """What srun sets for global rank 5 of a 2-node x 4-task job is what Lightning then uses."""
    import lightning as L
    import torch
    from lightning.fabric.plugins.environments import SLURMEnvironment

    env = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NNODES": "2", "SLURM_PROCID": "5",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4242",
           "SLURM_NODELIST": "gpu[07-08]"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # else launch() resets torch's threads
    # The strategy sets the process-wide rank_zero_only.rank to 5: put it back after the test, or
    # every later in-process run of this pytest session would think it is not rank 0 (no CSV logs).
    from lightning.fabric.utilities import rank_zero as fabric_rank_zero
    from lightning.pytorch.utilities import rank_zero as pytorch_rank_zero
    from lightning_utilities.core import rank_zero as utilities_rank_zero

    for fn in {id(m.rank_zero_only): m.rank_zero_only for m in (fabric_rank_zero, pytorch_rank_zero, utilities_rank_zero)}.values():
        monkeypatch.setattr(fn, "rank", getattr(fn, "rank", 0))
    kwargs = dict(accelerator="cpu", num_nodes=2, strategy="ddp", logger=False, enable_checkpointing=False)
    trainer = L.Trainer(devices=4, **kwargs)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (8, 5, 1, 1)
    assert trainer.strategy.cluster_environment.main_address == "gpu07"
    # fit() goes through the launcher, which checks the SLURM shape and (srun made the processes) starts none.
    assert trainer.strategy.launcher.launch(lambda: "ran", trainer=trainer) == "ran"
    mismatched = L.Trainer(devices=2, **kwargs)  # why tasks_per_node must follow trainer.devices
    with pytest.raises(ValueError, match="ntasks-per-node=4"):
        mismatched.strategy.launcher.launch(lambda: "ran", trainer=mismatched)


def test_local_multirun_through_submitit(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("train.py", "-m", "hydra/launcher=submitit_local", "rope=none,clex", *FAST, "logger=csv",
                  f"hydra.sweep.dir={sweep}", timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    results = [json.loads((sweep / str(i) / "results.json").read_text()) for i in (0, 1)]
    assert sorted(r["method"] for r in results) == ["clex", "none"]
    assert all(r["global_step"] == 3 and set(r["ppl"]) == {"32", "64", "128", "256"} for r in results)
    # The jobs went through submitit (its pickles and logs), and the sweep still ends in one summary.
    assert len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 2
    assert (sweep / "summary.md").is_file()
