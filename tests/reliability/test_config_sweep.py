"""A ``hypothesis`` sweep over the whole config: any wrong value for any key ends in one line or a valid config.

Each example takes the composed ``train.py`` config (the default, or with
another option of a config group: ``VARIANTS``) or ``eval.py``'s, picks one
key (any leaf of the config, or a whole node) and sets it to a drawn value of
the wrong kind: another type, zero, negative, empty, NaN, huge. The preflight
(:func:`~clexlab.utils.checks.preflight_train` / ``preflight_eval``, what the
entry points run before anything heavy loads) must then either accept the
config or raise a :class:`UserError` whose message is one line (or another
error the entry points print as one line with exit status 2). Any other
exception fails the test with the smallest example. Configs the train
preflight accepts are then built as the run would build them (the model with
its RoPE method, the curriculum, the callbacks and the Trainer), which must
not raise either. Examples are derandomized and bounded (``EXAMPLES``).
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from clexlab.utils.errors import UserError, find_user_error

EXAMPLES = int(os.environ.get("CLEXLAB_TEST_EXAMPLES", "40"))  # 300 sweeps deeper (minutes)
DERANDOMIZE = "CLEXLAB_TEST_EXAMPLES" not in os.environ

WRONG = st.one_of(
    st.sampled_from(["", "abc", "-1", "0", "1e9", "null", "???", "[1,2]", "${nope}", "cuda"]),
    st.sampled_from([0, -1, 1, 3, 2**31, 10**12, -(10**12)]),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.sampled_from([0.0, -0.5, 0.5, 1.5, 1e-30, 1e30, math.nan, math.inf, -math.inf]),
    st.booleans(),
    st.none(),
    st.lists(st.sampled_from([-1, 0, 1, 2.5, "x", None]), max_size=3),
    st.sampled_from([{}, {"x": 1}, {"_target_": "nope.Nope"}]),
)


def _keys(cfg) -> list[str]:
    """Every leaf key of ``cfg`` and every node key (``data``, ``data.corpus``, ...), dotted."""
    keys: list[str] = []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            full = f"{prefix}{key}"
            keys.append(full)
            if isinstance(value, dict):
                walk(value, f"{full}.")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return sorted(keys)


def _assert_one_line_or_valid(run) -> bool:
    """True when ``run()`` accepted the config.

    Otherwise the error must be one the entry points print as one line with exit
    status 2 (:func:`~clexlab.utils.errors.report_user_errors`: a UserError, or
    Lightning's MisconfigurationException, possibly wrapped by Hydra); anything
    else is re-raised and fails the test.
    """
    try:
        run()
    except Exception as err:
        found = find_user_error(err)
        if found is None:
            raise
        if isinstance(found, UserError):
            assert "\n" not in str(found).strip(), f"a UserError of several lines: {found}"
        return False
    return True


def _set(cfg, key: str, value) -> None:
    with open_dict(cfg):
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)


_BASE: dict = {}  # the composed configs, once per session (composing takes a moment)

# The default composition and one per other option of the config groups (a recipe as a dry run:
# its weights are not on this machine), so the keys those options add are swept too.
VARIANTS = (
    (), ("curriculum=pose",), ("curriculum=mixed",), ("curriculum=log_uniform",), ("trainer=ddp",), ("trainer=fsdp",),
    ("data=text",), ("rope=yarn",), ("rope=dynamic_ntk",), ("rope=llama3",), ("logger=csv",),
    ("model=mixtral8x7b", "dry_run=true"), ("model=phi2", "dry_run=true"), ("model=llama3_8b", "dry_run=true"),
)


def _build_like_the_run(cfg) -> None:
    """What train.py builds from an accepted config before its first step (no data, no training)."""
    from clexlab.models import LongContextLM
    from clexlab.workflows.common import build, container, instantiate_all

    callbacks = instantiate_all(cfg.get("callbacks"))
    LongContextLM(
        model=container(cfg.model), rope=container(cfg.rope), clex=container(cfg.clex), optim=container(cfg.optim),
        vocab_size=257, seed=cfg.seed, train=container(cfg.get("train")), data=container(cfg.data),
        curriculum=container(cfg.get("curriculum")), load_weights=False,
    )
    build(cfg.trainer, "trainer", callbacks=callbacks, logger=False)


@settings(
    max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_wrong_value_in_the_train_config_is_one_line(compose_train, data):
    from clexlab.utils.checks import preflight_train

    variant = data.draw(st.sampled_from(VARIANTS), label="options")
    if variant not in _BASE:
        _BASE[variant] = compose_train(*variant)
        preflight_train(_BASE[variant].copy())  # the unmodified config is valid: every refusal is the drawn value's
    base = _BASE[variant]
    cfg = base.copy()
    key = data.draw(st.sampled_from(_keys(base)), label="key")
    _set(cfg, key, data.draw(WRONG, label="value"))
    accepted = _assert_one_line_or_valid(lambda: preflight_train(cfg))
    if accepted and not cfg.get("dry_run"):  # a dry run builds nothing but the plan
        _assert_one_line_or_valid(lambda: _build_like_the_run(cfg))


@settings(
    max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_wrong_value_in_the_eval_config_is_one_line(compose_train, tmp_path_factory, data):
    from clexlab.utils.checks import preflight_eval

    if "eval" not in _BASE:
        ckpt = tmp_path_factory.mktemp("sweep_eval") / "last.ckpt"
        ckpt.write_bytes(b"")  # the preflight checks that the file exists; reading it is the loader's job
        _BASE["eval"] = compose_train(f"ckpt_path={ckpt}", "data=stdlib", "logger=csv", config_name="eval")
        preflight_eval(_BASE["eval"].copy())  # the unmodified config is valid
    base = _BASE["eval"]
    cfg = base.copy()
    key = data.draw(st.sampled_from(_keys(base)), label="key")
    _set(cfg, key, data.draw(WRONG, label="value"))
    _assert_one_line_or_valid(lambda: preflight_eval(cfg))
