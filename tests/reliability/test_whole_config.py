"""The preflight's schema for the whole config: model shapes, class options, absurd sizes (one line each).

Each case is a config a user could write and the line it must get; the
``hypothesis`` sweep in ``test_config_sweep.py`` checks the rule for random
keys, these pin the messages of the cases the issue names.
"""

from __future__ import annotations

import logging

import pytest

from clexlab.utils.errors import UserError


def _refused(compose_train, *overrides: str) -> str:
    from clexlab.utils.checks import preflight_train

    with pytest.raises(UserError) as info:
        preflight_train(compose_train(*overrides))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.num_kv_heads=3"], "model.num_heads=4 is not a multiple of model.num_kv_heads=3"),
        (["model.hidden_size=130"], "model.hidden_size=130 is not divisible by model.num_heads=4"),
        (["+model.head_dim=7"], "must be even"),
        (["model.num_kv_heads=8"], "model.num_kv_heads must be in [1, num_heads=4]"),
        (["model.num_layers=0"], "model.num_layers must be a positive integer"),
        (["model.hidden_size=8"], "rope=clex needs at least 4 rotated dimensions per head, the model rotates 2"),
        (["+model.partial_rotary_factor=0.5"], "model.arch=llama rotates whole heads"),
        (["model.arch=mixtral", "+model.num_experts=2", "+model.experts_per_token=3"], "experts_per_token must be in [1, num_experts=2]"),
        (["+model.hiden_size=64"], "model.hiden_size"),
        (["model.dtype=float8"], "model.dtype must be one of"),
    ],
)
def test_model_shapes_are_checked_before_transformers_builds(compose_train, overrides, expected):
    assert expected in _refused(compose_train, *overrides)


def test_gpt_neox_takes_its_heads_as_they_are(compose_train):
    """GPT-NeoX has no grouped-query attention: its adapter ignores num_kv_heads, so the check does too."""
    from clexlab.utils.checks import preflight_train

    preflight_train(compose_train("model.arch=gpt_neox", "model.num_kv_heads=2", "model.hidden_size=256"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+trainer.max_step=5"], "trainer.max_step is not an option of lightning.pytorch.Trainer: did you mean trainer.max_steps?"),
        (["trainer.max_steps=abc"], "trainer.max_steps must be int, got 'abc'"),
        (["trainer.precision=17"], "trainer.precision must be one of"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches must be >= 1"),
        (["data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
        (["data.corpus.val_fraction=1.5"], "data.corpus.val_fraction must be in [0, 1]"),
        (["+data.corpus.rot=/x"], "data.corpus.rot is not an option of clexlab.data.corpus.StdlibCorpus: did you mean data.corpus.root?"),
        (["callbacks.long_context_eval.max_tokens=0"], "callbacks.long_context_eval.max_tokens must be >= 1"),
        (["callbacks.passkey_eval.depths=[0.5,2]"], "callbacks.passkey_eval.depths must be in [0, 1]"),
        (["logger=csv", "+logger.csv.nme=x"], "logger.csv.nme is not an option of lightning.pytorch.loggers.CSVLogger: did you mean logger.csv.name?"),
        (["clex.lr=???"], "clex.lr"),
    ],
)
def test_class_options_are_checked_against_their_signature(compose_train, overrides, expected):
    assert expected in _refused(compose_train, *overrides)


def test_a_step_larger_than_the_machine_is_refused_with_the_estimate(compose_train):
    message = _refused(compose_train, "data.batch_size=100000")
    assert "one training step needs about" in message and "GiB" in message and "this machine has" in message


def test_a_hopeless_clex_table_is_refused_and_a_slow_one_warned_about(compose_train, caplog):
    from clexlab.utils.checks import preflight_train

    assert "takes about" in _refused(compose_train, "clex.max_scale=100000", "clex.solver=rk4")
    with caplog.at_level(logging.WARNING, logger="clexlab"):
        preflight_train(compose_train("clex.max_scale=1000", "clex.solver=rk4"))
    assert any("takes about" in r.getMessage() and "min" in r.getMessage() for r in caplog.records)
