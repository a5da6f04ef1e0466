"""``python train.py ... dry_run=true``: a memory plan on the meta device, no weights, no training."""

from __future__ import annotations

import re

import pytest

from clexlab.models.memory_plan import GIB
from tests.conftest import run_cli

LLAMA2_7B_PARAMS = 6_738_415_616  # LLaMA-2-7B without CLEX (the published count)
LLAMA2_7B_ODE = 128 * 128  # one CLEX dynamics network: head_dim/2 x head_dim + head_dim x head_dim/2


def gib(output: str, label: str) -> float:
    """The GiB figure on the line starting with ``label``."""
    match = re.search(rf"^\s+{re.escape(label)}.*?(\d+\.\d+)\s*$", output, re.M)
    assert match, f"no line {label!r} in:\n{output}"
    return float(match.group(1))


def dry_run_cli(tmp_path, *overrides):
    return run_cli("train.py", *overrides, "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}", "logger=none")


def test_llama7b_fsdp_on_8_gpus(tmp_path):
    result = dry_run_cli(
        tmp_path, "model=llama7b", "clex.max_scale=16", "trainer=fsdp", "trainer.devices=8"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    params = re.search(r"parameters: ([\d,]+) total = ([\d,]+) model \+ ([\d,]+) CLEX ODE", out)
    assert params, out
    total, model, ode = (int(g.replace(",", "")) for g in params.groups())
    assert model == LLAMA2_7B_PARAMS
    assert ode == LLAMA2_7B_ODE
    assert total == LLAMA2_7B_PARAMS + LLAMA2_7B_ODE
    assert "4096 tokens x micro-batch 1" in out and "bf16-mixed" in out and "sharded over 8 GPUs" in out
    # fp32 master weights and gradients sharded 8 ways (the ODE replicated), AdamW twice that.
    shard = 4 * (LLAMA2_7B_PARAMS // 8 + LLAMA2_7B_ODE) / GIB
    assert gib(out, "weights") == pytest.approx(shard, abs=0.01)
    assert gib(out, "gradients") == pytest.approx(shard, abs=0.01)
    assert gib(out, "optimizer") == pytest.approx(2 * shard, abs=0.01)
    # FSDP2 gathers bf16 weights over the fp32 shards: autocast copies none of them ...
    assert "FSDP2 gathers bf16 weights over the fp32 shards" in out
    assert not re.search(r"^\s+bf16 weight copies", out, re.M)
    # ... the root (2 x 131M-row embedding/LM head) and 2 layers in bf16, one layer's fp32 gradients
    layer = 202_383_360  # one LLaMA-2-7B decoder layer
    root = 2 * 32000 * 4096 + 4096
    assert gib(out, "all-gathered bf16") == pytest.approx((2 * (root + 2 * layer) + 4 * layer) / GIB, abs=0.01)
    # checkpointing: 32 layer inputs of 4096 x 4096 bf16 = 1 GiB, plus the final norm and the loss's inputs
    assert 1.0 < gib(out, "activations kept") < 1.25
    peak = gib(out, "total")
    assert 14 < peak < 20
    assert f"verdict: fits in 80 GiB per GPU with {80 - peak:.2f} GiB headroom" in out
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "results.json").exists()


def test_too_small_a_gpu_is_said_plainly(tmp_path):
    result = dry_run_cli(tmp_path, "model=llama7b", "trainer=fsdp", "trainer.devices=8", "dry_run_gpu_gb=16")
    assert result.returncode == 0, result.stderr  # a plan, not a failure
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("verdict:")]
    assert len(verdicts) == 1
    over = re.search(r"does NOT fit in 16 GiB per GPU: needs (\d+\.\d+) GiB, (\d+\.\d+) GiB over", verdicts[0])
    assert over, verdicts[0]
    assert float(over.group(1)) - 16 == pytest.approx(float(over.group(2)), abs=0.011)


def test_ddp_replicates_and_13b_reads_its_own_shapes(compose_train, capsys):
    from clexlab.utils.checks import preflight_train
    from clexlab.workflows.dry_run import build_plan, dry_run

    cfg = compose_train("model=llama7b", "trainer=ddp", "trainer.devices=8", "dry_run=true")
    preflight_train(cfg)  # model.path=??? is fine in a dry run
    plan, facts = build_plan(cfg)
    assert not facts["sharded"] and plan.setup.shards == 1 and plan["gathered"] == 0
    # bf16-mixed without FSDP: autocast caches a bf16 copy of every linear weight (all but the embedding)
    assert plan.setup.precision == "bf16-mixed" and plan["compute_copies"] == 2 * plan.counts.matmul
    assert 12.0 < plan["compute_copies"] / GIB < 12.6
    # every GPU: fp32 weights + grads + 2 AdamW states = 16 bytes a parameter: more than an 80 GiB GPU
    assert plan["weights"] + plan["gradients"] + plan["optimizer"] > 16 * LLAMA2_7B_PARAMS
    assert plan.total > 80 * GIB

    cfg = compose_train("model=llama2_13b", "trainer=fsdp", "trainer.devices=8", "dry_run=true")
    plan = dry_run(cfg)
    out = capsys.readouterr().out
    assert plan.counts.total - plan.counts.ode == 13_015_864_320  # LLaMA-2-13B
    assert "sharded over 8 GPUs" in out and out.count("verdict:") == 1


def test_bad_gpu_memory_is_one_line(tmp_path):
    result = run_cli("train.py", "model=llama7b", "dry_run=true", "dry_run_gpu_gb=0", f"hydra.run.dir={tmp_path / 'run'}", "logger=none")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: dry_run_gpu_gb must be a positive number of GiB per GPU, got 0"], result.stderr


@pytest.mark.parametrize(
    "override,message",
    [
        ("dry_run=maybe", "dry_run: Value 'maybe' is not a valid bool"),
        ("trainer.devices=auto", "dry_run needs trainer.devices as a number"),
        ("trainer=fsdp trainer.devices=8 trainer.precision=16-mixed", "trainer=fsdp does not run with trainer.precision=16-mixed"),
    ],
)
def test_bad_dry_run_input_is_a_user_error(compose_train, override, message):
    from clexlab.utils.checks import preflight_train
    from clexlab.utils.errors import UserError
    from clexlab.workflows.dry_run import build_plan

    with pytest.raises(UserError, match=re.escape(message)):
        cfg = compose_train("model=llama7b", "dry_run=true", *override.split())
        preflight_train(cfg)
        build_plan(cfg)


# The published parameter counts of each recipe's model (without CLEX), and its CLEX ODE
# (rotary_dim/2 x rotary_dim + rotary_dim x rotary_dim/2, param_factor 1).
RECIPES = {
    "llama3_8b": (8_030_261_248, 128, None),
    "mistral7b": (7_241_732_096, 128, None),
    "qwen2_7b": (7_615_616_512, 128, None),
    "mixtral8x7b": (46_702_792_704, 128, 12_879_925_248),
    "phi2": (2_779_683_840, 32, None),   # partial_rotary_factor 0.4 of head_dim 80
    "pythia1b": (1_011_781_632, 64, None),  # rotary_pct 0.25 of head_dim 256
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_plans_without_weights_and_needs_a_path_to_train(name, compose_train):
    from clexlab.utils.checks import preflight_train
    from clexlab.utils.errors import UserError
    from clexlab.workflows.dry_run import build_plan, format_plan

    published, rotary_dim, active = RECIPES[name]
    plan, facts = build_plan(compose_train(f"model={name}", "dry_run=true", "trainer=fsdp", "trainer.devices=8"))
    counts = plan.counts
    assert counts.ode == rotary_dim * rotary_dim and counts.total - counts.ode == published
    report = format_plan(plan, facts, 80.0)
    if active is not None:  # MoE: the active count, every expert sharded with its layer
        assert counts.active - counts.ode == active
        assert f"{counts.active:,} active per token (2 of 8 experts per layer)" in report
        assert "(every expert too: each rank holds 1/8 of each)" in report
    else:
        assert counts.active == counts.total and "active per token" not in report
    with pytest.raises(UserError, match=f"model={name} needs local weights: set model.path="):
        preflight_train(compose_train(f"model={name}"))
