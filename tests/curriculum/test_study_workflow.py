"""experiment=curriculum_study end to end on a tiny model: labels per curriculum, seeds, goals, base reuse, resume."""

import json

from tests.conftest import FAST

TINY_STUDY = [
    *FAST,
    "logger=none",
    "experiment=curriculum_study",
    "protocol.base_steps=2",
    "protocol.stage2_steps=1",
    "protocol.seeds=[0,1]",
    "trainer.val_check_interval=1",
    "clex.max_scale=2",
    "eval.multiples=[1,2]",
    "eval.max_tokens=128",
    "callbacks.long_context_eval.multiples=[1]",
    "protocol.goals.long_multiple=2",
    "protocol.goals.ratio_multiple=2",
    # One curriculum besides the paper's is enough to see the rows apart (the labels of every
    # option are tested in test_training_module.py); each curriculum costs 2 rows x 2 seeds.
    "~protocol.curricula.uniform",
    "~protocol.curricula.log_uniform",
    "~protocol.curricula.continuous",
    "~protocol.curricula.mixed",
    "~protocol.curricula.weight_one",
    "~protocol.curricula.pose_one",
]


def test_study_runs_every_seed_writes_goals_and_resumes_from_its_base(compose_train, tmp_path):
    from clexlab.workflows.curriculum_study import run_curriculum_study

    def study(*extra):
        cfg = compose_train(*TINY_STUDY, *extra)
        cfg.protocol.methods = [m for m in cfg.protocol.methods if m.get("role")]  # none and yarn only
        run_curriculum_study(cfg)

    study()
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    labels = {"base", "none", "yarn-x16", "clex+pose2", "clex-frozen+pose2"}
    assert set(summary["methods"]) == labels
    assert all(len(summary["methods"][m]["runs"]) == 2 for m in labels - {"base"})  # two seeds each
    seeded = json.loads((run / "clex+pose2" / "seed1" / "results.json").read_text())
    assert seeded["seed"] == 1 and seeded["method"] == "clex+pose2" and seeded["global_step"] == 1
    goals = json.loads((run / "goals.json").read_text())
    assert goals["reference"]["label"] == "none" and goals["rival"]["label"] == "yarn-x16"
    assert {r["label"] for r in goals["goal1"]} == {"clex+pose2", "clex-frozen+pose2"}
    assert [(r["curriculum"], r["learned"], r["frozen"]) for r in goals["goal3"]] == [
        ("pose", "clex+pose2", "clex-frozen+pose2")
    ]
    assert "Goal 1" in (run / "goals.md").read_text()
    # A rerun from the same base with resume keeps the finished rows and redoes only the one cut short.
    base = run / "base" / "checkpoints" / "last.ckpt"
    kept = {p: p.stat().st_mtime_ns for p in (base, run / "clex+pose2" / "seed0" / "results.json")}
    (run / "none" / "seed1" / "results.json").unlink()
    study(f"protocol.base_ckpt={base}", "protocol.resume=true")
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    assert json.loads((run / "none" / "seed1" / "results.json").read_text())["global_step"] == 1
    assert "base" in json.loads((run / "summary.json").read_text())["methods"]
