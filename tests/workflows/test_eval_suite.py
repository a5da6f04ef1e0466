"""eval.py's suite on a clexlab checkpoint, a Hugging Face directory and a released-format CLEX directory."""

import json

import pytest
import torch

from clexlab.evaluation import read_png_data
from clexlab.utils.errors import UserError
from tests.conftest import TINY_CLEX, TINY_MODEL, TINY_OPTIM, run_cli
from tests.workflows.test_local_checkpoint import save_tiny_hf_model

SMALL = ["eval.max_tokens=256", "eval.batch_size=2", "eval.passkey.samples=2", "eval.passkey.depths=[0,1]", "eval.passkey.max_new_tokens=6"]


def save_fake_checkpoint(path, rope="clex"):
    """What train.py's checkpoint holds for eval: hyper-parameters and weights (no training needed)."""
    from clexlab.models import LongContextLM

    torch.manual_seed(0)
    data = {
        "_target_": "clexlab.data.datamodule.LongContextDataModule",
        "corpus": {"_target_": "clexlab.data.corpus.StdlibCorpus", "root": None, "val_fraction": 0.05, "test_fraction": 0.05},
        "seq_len": 32, "batch_size": 4, "num_workers": 0, "val_max_windows": 4, "cache_dir": "unused", "seed": 0,
    }
    # rope as train.py passes it: the whole config node
    module = LongContextLM(model=dict(TINY_MODEL), rope={"name": rope, "factor": 1.0}, clex=dict(TINY_CLEX), optim=dict(TINY_OPTIM), vocab_size=257, data=data)
    if rope == "clex":
        with torch.no_grad():
            module.clex_rope.dynamics.down_proj.normal_(0, 0.2)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "global_step": 7}, path)
    return module


def check_outputs(run, payload, clex):
    """results.json is the payload; the report and every figure hold its numbers."""
    saved = json.loads((run / "results.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    report = (run / "report.md").read_text()
    if saved["ppl"]:
        assert len(set(saved["tokens"].values())) == 1  # same targets at every length
        figure = read_png_data(run / "ppl_vs_length.png")
        assert figure["lengths"] == sorted(int(n) for n in saved["ppl"])
        assert figure["ppl"] == [saved["ppl"][str(n)] for n in figure["lengths"]]
        for n, ppl in saved["ppl"].items():
            assert f"| {n} |" in report and f"{ppl:.3f}" in report
    if "passkey" in saved:
        figure = read_png_data(run / "passkey_heatmap.png")
        assert figure["accuracy"] == saved["passkey"]["accuracy"] and figure["lengths"] == saved["passkey"]["lengths"]
        assert "## Passkey retrieval" in report
    assert (run / "clex_frequencies.png").is_file() == clex
    return saved


def test_eval_on_a_checkpoint_writes_every_output(compose_train, tmp_path):
    from clexlab.workflows.evaluate import evaluate

    module = save_fake_checkpoint(tmp_path / "tiny.ckpt")
    cfg = compose_train(
        f"ckpt_path={tmp_path / 'tiny.ckpt'}", *SMALL, "eval.lengths=[32,64]", "eval.passkey.lengths=[256]", "logger=csv",
        config_name="eval",
    )
    saved = check_outputs(tmp_path / "run", evaluate(cfg), clex=True)
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "test/ppl@64" in header and "eval/passkey@256" in header
    assert saved["train_length"] == 32 and saved["rope"] == "clex" and saved["global_step"] == 7 and saved["max_scale"] == 4
    assert saved["protocol"] == "chunks" and saved["passkey"]["lengths"] == [256] and saved["tasks"] == ["ppl", "passkey"]
    curves = read_png_data(tmp_path / "run" / "clex_frequencies.png")
    table = module.clex_rope.frequency_table()
    assert curves["learned"][-1][-1] == pytest.approx(table[-1, curves["indices"][-1]].item(), abs=1e-5)


def test_eval_on_a_hf_directory_defaults_to_stdlib_and_its_tokenizer(compose_train, tmp_path):
    from clexlab.workflows.evaluate import evaluate

    save_tiny_hf_model(tmp_path / "hf", rope_theta=5000.0)  # L = max_position_embeddings = 32, character tokens
    cfg = compose_train(
        f"model.path={tmp_path / 'hf'}", *SMALL, "eval.multiples=[1,4]", "eval.protocol=sliding", "eval.stride=16",
        "eval.passkey.lengths=[64,300]", config_name="eval",
    )
    saved = check_outputs(tmp_path / "run", evaluate(cfg), clex=False)
    assert saved["train_length"] == 32 and set(saved["ppl"]) == {"32", "128"}
    assert saved["protocol"] == "sliding" and saved["stride"] == 16 and saved["rope"] == "default" and saved["model"] == "hf"
    accuracy = saved["passkey"]["accuracy"]
    assert accuracy[0] == [None, None] and all(0.0 <= v <= 1.0 for v in accuracy[1])  # 64 tokens cannot hold the prompt
    # model.train_length overrides the config's length
    cfg = compose_train(f"model.path={tmp_path / 'hf'}", *SMALL, "model.train_length=64", "eval.multiples=[1]", "eval.tasks=[ppl]", config_name="eval")
    assert set(evaluate(cfg)["ppl"]) == {"64"}


def test_eval_on_an_exported_release_directory_matches_the_checkpoint(compose_train, tmp_path):
    from clexlab.export import export_checkpoint
    from clexlab.workflows.evaluate import evaluate

    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    common = [*SMALL, "eval.lengths=[32,96]", "eval.passkey.lengths=[260]", "eval.protocol=sliding", "eval.stride=24"]
    from_ckpt = evaluate(compose_train(f"ckpt_path={tmp_path / 'tiny.ckpt'}", *common, config_name="eval"))
    out = export_checkpoint(tmp_path / "tiny.ckpt", tmp_path / "release")
    assert json.loads((out / "config.json").read_text())["clexlab_tokenizer"] == "bytes"
    cfg = compose_train(f"model.path={out}", *common, "paths.output_dir=" + str(tmp_path / "run2"), config_name="eval")
    saved = check_outputs(tmp_path / "run2", evaluate(cfg), clex=True)
    assert saved["format"] == "clex-release" and saved["max_scale"] == TINY_CLEX["max_scale"]
    for n, ppl in from_ckpt["ppl"].items():  # same weights, data and targets: the same numbers
        assert saved["ppl"][n] == pytest.approx(ppl, rel=1e-4)
    assert saved["passkey"] == from_ckpt["passkey"]


class FakeLogger:
    """Records what a W&B logger would receive."""

    def __init__(self):
        self.metrics, self.tables, self.images, self.finalized = {}, {}, {}, False

    def log_metrics(self, metrics):
        self.metrics.update(metrics)

    def log_table(self, key, columns, data):
        self.tables[key] = (columns, data)

    def log_image(self, key, images):
        self.images[key] = images

    def finalize(self, status):
        self.finalized = status == "success"


def test_loggers_get_metrics_tables_and_figures(compose_train, tmp_path):
    from clexlab.utils.checks import preflight_eval
    from clexlab.workflows.evaluate import run_suite, subject_from_checkpoint

    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    cfg = compose_train(f"ckpt_path={tmp_path / 'tiny.ckpt'}", *SMALL, "eval.lengths=[32,256]", "eval.max_tokens=256", config_name="eval")
    logger = FakeLogger()
    payload = run_suite(subject_from_checkpoint(str(cfg.ckpt_path)), preflight_eval(cfg), cfg, [logger])
    assert logger.metrics["test/ppl@256"] == payload["ppl"]["256"] and "eval/passkey@256" in logger.metrics
    assert "eval/passkey@32" not in logger.metrics  # too short: not run, not logged as 0
    assert logger.tables["test/ppl_table"][1][0][:2] == [32, 1.0]
    assert logger.tables["eval/passkey_table"][0] == ["length", "depth 0", "depth 1"]
    assert set(logger.images) == {"eval/ppl_vs_length", "eval/passkey_heatmap", "eval/clex_frequencies"} and logger.finalized


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ([], "set ckpt_path=... "),
        (["ckpt_path=CKPT", "model.path=HF"], "not both"),
        (["model.path=/nonexistent/dir"], "does not exist"),
        (["model.path=HF", "model.train_length=0"], "model.train_length must be an integer >= 2"),
        (["model.path=HF", "eval.protocol=window"], "eval.protocol must be one of"),
        (["model.path=HF", "eval.tasks=[ppl,niah]"], "eval.tasks must be"),
        (["model.path=HF", "eval.passkey.depths=[0.5,2]"], "eval.passkey.depths must be fractions"),
        (["model.path=HF", "eval.stride=-1"], "eval.stride must be a positive"),
    ],
)
def test_preflight_names_the_mistake(compose_train, tmp_path, overrides, fragment):
    from clexlab.utils.checks import preflight_eval

    (tmp_path / "x.ckpt").write_bytes(b"")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "llama"}')
    overrides = [o.replace("CKPT", str(tmp_path / "x.ckpt")).replace("=HF", f"={tmp_path / 'hf'}") for o in overrides]
    with pytest.raises(UserError, match=fragment):
        preflight_eval(compose_train(*overrides, config_name="eval"))


def test_cli_export_then_eval(tmp_path):
    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    res = run_cli("-m", "clexlab.export", f"ckpt_path={tmp_path / 'tiny.ckpt'}", f"out={tmp_path / 'release'}", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli(
        "eval.py", f"model.path={tmp_path / 'release'}", "eval.lengths=[32,64]", "eval.tasks=[ppl]", "eval.max_tokens=128",
        f"hydra.run.dir={tmp_path / 'run'}", timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| 64 | 2 |" in res.stdout
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"results.json", "report.md", "ppl_vs_length.png", "clex_frequencies.png"}


def test_export_cli_arguments_are_checked(tmp_path, capsys):
    from clexlab.export import main

    for argv, fragment in [([f"ckpt_path={tmp_path}/x.ckpt"], "error: set out="), (["ckpt=x", "out=y"], "error: unknown argument 'ckpt=x'")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and capsys.readouterr().err.startswith(fragment)
    module = save_fake_checkpoint(tmp_path / "none.ckpt", rope="none")
    with pytest.raises(SystemExit):
        main([f"ckpt_path={tmp_path / 'none.ckpt'}", f"out={tmp_path / 'o'}"])
    assert "trained with rope=none; only CLEX models export" in capsys.readouterr().err and module is not None
