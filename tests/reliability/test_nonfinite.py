"""A NaN/Inf loss or gradient stops training naming the step and keeps the last good checkpoint,
or, with train.skip_nonfinite=true, skips the step and counts it. A full disk while saving is one error."""

import errno

import pytest
import torch

from tests.conftest import FAST
from tests.reliability.helpers import step_losses

RUN = [*FAST, "trainer.max_steps=4", "trainer.val_check_interval=4", "logger=csv", "callbacks.last_checkpoint.every_n_train_steps=1"]


class NanGradient(torch.autograd.Function):
    """Identity forward (a finite loss), NaN backward (non-finite gradients)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def inject(monkeypatch, at_call: int, kind: str):
    """Make the training loss of the ``at_call``-th training step (0-based) non-finite."""
    import clexlab.models.lit_module as lit

    real = lit.causal_lm_nll
    calls = {"train": 0}

    def nll(model, *args, **kwargs):
        total, count = real(model, *args, **kwargs)
        if model.training:
            calls["train"] += 1
            if calls["train"] - 1 == at_call:
                total = total * float("nan") if kind == "loss" else NanGradient.apply(total)
        return total, count

    monkeypatch.setattr(lit, "causal_lm_nll", nll)


def finite(ckpt):
    return all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if torch.is_floating_point(v))


@pytest.mark.parametrize("kind,message", [("loss", "non-finite loss (nan) at step 2"), ("grad", "non-finite gradient at step 2")])
def test_nonfinite_stops_and_keeps_the_last_good_checkpoint(compose_train, tmp_path, monkeypatch, kind, message):
    from clexlab.callbacks import NonFiniteError
    from clexlab.workflows.train import train

    inject(monkeypatch, at_call=2, kind=kind)
    with pytest.raises(NonFiniteError) as caught:
        train(compose_train(*RUN))
    text = str(caught.value)
    assert message in text and "last good checkpoint" in text and "train.skip_nonfinite=true" in text
    assert "\n" not in text
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and finite(ckpt)  # saved after step 1, never overwritten by step 2
    assert not (tmp_path / "run" / "results.json").exists()


def test_skip_nonfinite_skips_the_step_and_counts_it(compose_train, tmp_path, monkeypatch):
    from clexlab.workflows.train import train

    inject(monkeypatch, at_call=1, kind="loss")

    payload = train(compose_train(*RUN, "train.skip_nonfinite=true"))
    assert payload["global_step"] == 4
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert finite(ckpt) and ckpt["callbacks"]["NonFiniteGuard"]["skipped"] == 1
    metrics = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "train/skipped_nonfinite" in metrics
    losses = step_losses(tmp_path / "run" / "csv" / "metrics.csv")
    assert losses[1] != losses[1] and all(v == v for s, v in losses.items() if s != 1)  # NaN at step 1 only


def test_disk_full_while_saving_is_one_error_and_keeps_the_previous_checkpoint(compose_train, tmp_path, monkeypatch):
    from clexlab.utils import checkpoint_io
    from clexlab.utils.errors import UserError
    from clexlab.workflows.train import train

    real_save, saves = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", save)
    with pytest.raises(UserError, match="disk full") as caught:
        train(compose_train(*RUN))
    assert "previous last.ckpt is intact" in str(caught.value)
    monkeypatch.undo()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp"))
