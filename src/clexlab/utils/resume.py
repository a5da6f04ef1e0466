"""Where a run resumes from: ``ckpt_path=<file>``, or ``ckpt_path=auto``, checked before training.

``ckpt_path=auto`` makes one command line serve every (re)submission of a
pre-emptible job::

    python train.py ckpt_path=auto model=llama7b model.path=... clex.max_scale=16

It picks the newest ``checkpoints/last.ckpt`` under ``outputs/`` whose run was
started with the same command-line overrides (read from the run's
``.hydra/overrides.yaml``; ``ckpt_path=...`` itself is ignored on both sides),
and starts from scratch when there is none, so the first submission trains
and every later one continues.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clexlab.utils.errors import UserError

log = logging.getLogger("clexlab")

AUTO = "auto"
# Settings that decide the shapes of the saved tensors: a mismatch cannot be resumed.
SHAPE_KEYS = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size")


def _comparable(overrides: list[str]) -> list[str]:
    """Overrides that define a run: without ``ckpt_path`` (how it started) and Hydra's own settings."""
    keep = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key == "ckpt_path" or key.startswith("hydra."):
            continue
        keep.append(item)
    return sorted(keep)


def current_overrides() -> list[str]:
    """The task overrides of the running Hydra job (empty outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (a test composing configs)
        return []


def find_auto_checkpoint(search_root: str | Path, overrides: list[str], exclude: str | Path | None = None) -> Path | None:
    """The newest ``last.ckpt`` under ``search_root`` from a run with the same overrides (minus ``ckpt_path``).

    Args:
        search_root: directory holding Hydra run directories (``outputs/``).
        overrides: the current run's overrides.
        exclude: the current run's own directory (never a candidate).
    """
    root = Path(search_root)
    if not root.is_dir():
        return None
    wanted = _comparable(overrides)
    skip = Path(exclude).resolve() if exclude else None
    found: list[tuple[float, Path]] = []
    for ckpt in root.glob("**/checkpoints/last.ckpt"):
        run_dir = ckpt.parent.parent
        if skip is not None and run_dir.resolve() == skip:
            continue
        saved = run_dir / ".hydra" / "overrides.yaml"
        if not saved.is_file():
            continue
        try:
            theirs = OmegaConf.to_container(OmegaConf.load(saved))
        except Exception:  # an unreadable overrides file: not a run we can vouch for
            continue
        if isinstance(theirs, list) and _comparable([str(x) for x in theirs]) == wanted:
            found.append((ckpt.stat().st_mtime, ckpt))
    return max(found)[1] if found else None


def check_resume_compatible(ckpt: dict[str, Any], model_cfg: dict[str, Any], rope_name: str | None, path: Any) -> None:
    """Raise a one-line :class:`UserError` when ``ckpt`` cannot continue this config.

    Args:
        ckpt: the loaded checkpoint (tensors may be memory-mapped).
        model_cfg: the current ``model`` node.
        rope_name: the current ``rope.name``.
        path: the checkpoint's path, for the message.
    """
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict):
        raise UserError(f"ckpt_path={path} was not written by clexlab train.py (no model hyper-parameters)")
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise UserError(
            f"ckpt_path={path} holds weights only (no optimizer or loop state), so it cannot be resumed: "
            f"use init_from={path} to start a new run from its weights"
        )
    theirs = hparams["model"]
    for key in SHAPE_KEYS:
        if key in theirs and key in model_cfg and theirs[key] != model_cfg[key]:
            raise UserError(
                f"ckpt_path={path} is from a model with model.{key}={theirs[key]}, this config has {model_cfg[key]}: "
                f"resume with the run's own model.* settings (or use init_from=... for a new run from its weights)"
            )
    their_rope = hparams.get("rope")
    their_rope = their_rope.get("name") if isinstance(their_rope, dict) else their_rope
    if rope_name is not None and their_rope is not None and their_rope != rope_name:
        raise UserError(
            f"ckpt_path={path} was trained with rope={their_rope}, this config has rope={rope_name}: "
            f"resume with rope={their_rope} (or use init_from=... to switch methods)"
        )


def resolve_ckpt_path(cfg: DictConfig, check: bool = True) -> str | None:
    """The checkpoint to resume from: ``cfg.ckpt_path``, the one ``auto`` finds, or None.

    Args:
        cfg: the train config.
        check: load the checkpoint (memory-mapped) and check it fits the model.

    Raises:
        UserError: a missing, unreadable or incompatible checkpoint.
    """
    from clexlab.utils.checkpoint_io import load_checkpoint_file

    path = cfg.get("ckpt_path")
    if not path:
        return None
    if str(path) == AUTO:
        root = Path(cfg.paths.root_dir) / "outputs"
        found = find_auto_checkpoint(root, current_overrides(), exclude=cfg.paths.output_dir)
        if found is None:
            log.info("ckpt_path=auto: no earlier run with these overrides under %s; starting from scratch", root)
            return None
        log.info("ckpt_path=auto: resuming from %s", found)
        path = str(found)
    if not Path(str(path)).expanduser().is_file():
        raise UserError(f"ckpt_path={path} does not exist or is not a file (a Lightning .ckpt to resume from, or auto)")
    if check:
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        rope = cfg.get("rope")
        ckpt = load_checkpoint_file(path, mmap=True)
        check_resume_compatible(ckpt, model_cfg, rope.get("name") if rope is not None else None, path)
    return str(path)
