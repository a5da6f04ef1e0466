"""Unit tests of the reliability pieces: resumable sampler, atomic checkpoint I/O, ckpt_path=auto, W&B probe."""

import errno
import logging
import time

import pytest
import torch

from clexlab.data.sampler import ResumableDataLoader, ResumableSampler
from clexlab.utils.errors import UserError


def batches(loader):
    return [b.tolist() for b in loader]


def test_loader_resumes_mid_epoch_and_at_epoch_end():
    data = torch.arange(40)
    done = {"n": 0}
    loader = ResumableDataLoader(data, ResumableSampler(40, seed=3), batch_size=4, progress=lambda: done["n"])
    full = batches(loader)  # epoch 0: 10 batches, a permutation
    assert len(full) == 10 and sorted(sum(full, [])) == list(range(40))
    loader.sampler.set_epoch(1)
    assert batches(loader) != full  # another epoch, another order

    for n in (3, 10):  # mid-epoch, and right after the epoch's last batch
        done["n"] = n
        loader.sampler.set_epoch(0)
        state = loader.state_dict()
        fresh = ResumableDataLoader(data, ResumableSampler(40, seed=3), batch_size=4)
        fresh.load_state_dict(state)
        if n < 10:
            assert batches(fresh) == full[n:]
            fresh.sampler.set_epoch(1)
            assert len(batches(fresh)) == 10  # the skip applies to the resumed epoch only
        else:
            assert fresh.sampler.epoch == 1 and len(batches(fresh)) == 10


def test_changed_batch_size_restarts_the_epoch_with_a_warning():
    loader = ResumableDataLoader(torch.arange(40), ResumableSampler(40), batch_size=4, progress=lambda: 5)
    other = ResumableDataLoader(torch.arange(40), ResumableSampler(40), batch_size=8)
    with pytest.warns(UserWarning, match="restarts"):
        other.load_state_dict(loader.state_dict())
    assert len(batches(other)) == 5


def test_ranks_get_disjoint_equal_shares():
    shares = [list(ResumableSampler(41, seed=1, rank=r, world_size=4)) for r in range(4)]
    assert all(len(s) == 10 for s in shares)
    assert len(set(sum(shares, []))) == 40


def test_atomic_save_keeps_the_old_file_when_the_disk_fills(tmp_path, monkeypatch):
    from clexlab.utils import checkpoint_io
    from clexlab.utils.checkpoint_io import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")  # some bytes reach the temporary file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", full_disk)
    with pytest.raises(UserError, match="disk full .* the previous last.ckpt is intact"):
        io.save_checkpoint({"global_step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1


class NotAllowed:
    """An arbitrary class: unpickling it would run code, weights_only refuses."""


def test_checkpoints_load_with_weights_only(tmp_path):
    from clexlab.utils.checkpoint_io import AtomicCheckpointIO

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": NotAllowed()}, path)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        AtomicCheckpointIO().load_checkpoint(path)


def write_run(root, name, overrides, mtime):
    import os

    run = root / "outputs" / name
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"x")
    os.utime(ckpt, (mtime, mtime))
    return ckpt


def test_auto_picks_the_newest_run_with_the_same_overrides(tmp_path):
    from clexlab.utils.resume import find_auto_checkpoint

    now = time.time()
    old = write_run(tmp_path, "a", ["clex.max_scale=4", "logger=csv"], now - 100)
    newer = write_run(tmp_path, "b", ["logger=csv", "clex.max_scale=4", f"ckpt_path={old}"], now - 50)
    write_run(tmp_path, "c", ["clex.max_scale=8", "logger=csv"], now)  # other settings: never
    current = ["clex.max_scale=4", "logger=csv", "ckpt_path=auto"]
    assert find_auto_checkpoint(tmp_path / "outputs", current) == newer
    assert find_auto_checkpoint(tmp_path / "outputs", current, exclude=newer.parent.parent) == old
    assert find_auto_checkpoint(tmp_path / "outputs", ["clex.max_scale=2"]) is None
    assert find_auto_checkpoint(tmp_path / "nothing", current) is None


def test_auto_without_an_earlier_run_starts_from_scratch(compose_train):
    from clexlab.utils.resume import resolve_ckpt_path

    assert resolve_ckpt_path(compose_train("ckpt_path=auto")) is None


def test_wandb_key_without_network_goes_offline_quickly(monkeypatch, caplog):
    from clexlab.utils import wandb_mode

    monkeypatch.setenv("WANDB_API_KEY", "dummy")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wandb_mode.wandb_host_reachable.cache_clear()
    wandb_mode._warn_unreachable.cache_clear()
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="clexlab"):
        assert wandb_mode.wandb_offline() is True
        assert wandb_mode.wandb_offline() is True
    assert time.perf_counter() - started < 5
    warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(warnings) == 1 and "wandb sync" in warnings[0].getMessage()
