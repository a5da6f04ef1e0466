"""Shared fixtures: tiny configs built in code, an isolated token cache, Hydra compose."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

TINY_MODEL = {
    "name": "tiny",
    "path": None,
    "tokenizer": "bytes",
    "train_length": 32,
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 4,
    "intermediate_size": 128,
    "rope_theta": 10000.0,
    "dtype": "float32",
    "gradient_checkpointing": False,
    "attn_implementation": "sdpa",
}
TINY_CLEX = {"max_scale": 4, "param_factor": 1, "act": "tanh", "time_dt": 0.1, "lr": 1e-4, "log_scale": False, "solver": "fast"}
TINY_OPTIM = {"lr": 1e-3, "weight_decay": 0.0, "betas": [0.9, 0.95], "warmup_steps": 1, "min_lr_ratio": 0.1}

# Overrides that make train.py take seconds: a 32-token, 32-wide model, 3 steps.
FAST = [
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "data.batch_size=4",
    "data.val_max_windows=4",
    "callbacks.long_context_eval.max_tokens=512",
    "eval.max_tokens=512",
    "model.train_length=32",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "clex.max_scale=4",
]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Token caches and W&B files of the test session go to a temporary directory."""
    cache = tmp_path_factory.mktemp("clexlab-cache")
    os.environ["CLEXLAB_CACHE_DIR"] = str(cache)
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return cache


@pytest.fixture
def tiny_module():
    """A LongContextLM with a tiny LLaMA and CLEX (t_max 4, L 32)."""
    from clexlab.models import LongContextLM

    torch.manual_seed(0)
    return LongContextLM(model=dict(TINY_MODEL), rope="clex", clex=dict(TINY_CLEX), optim=dict(TINY_OPTIM), vocab_size=257)


@pytest.fixture
def compose_train(tmp_path):
    """Compose conf/train.yaml with overrides, paths pointed at ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import clexlab.utils.resolvers  # noqa: F401

    def _compose(*overrides: str, config_name: str = "train"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=[
                    f"paths.root_dir={tmp_path}",
                    f"paths.output_dir={tmp_path / 'run'}",
                    f"paths.cache_dir={os.environ['CLEXLAB_CACHE_DIR']}",
                    *overrides,
                ],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):  # the task function never sees the hydra node
            del cfg["hydra"]
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run ``python <args>`` from the repository root; return the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
