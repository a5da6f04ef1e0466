"""eval.py with eval.tasks=[ppl,passkey,ruler,needle_nll] on a checkpoint and a local HF directory; longbench on files
written here; the new options' errors in one line."""

import json

import pytest

from clexlab.evaluation import read_png_data
from clexlab.utils.errors import UserError
from tests.evaluation.test_longbench import record, write_jsonl
from tests.workflows.test_eval_suite import FakeLogger, save_fake_checkpoint
from tests.workflows.test_local_checkpoint import save_tiny_hf_model

TASKS = [
    "eval.tasks=[ppl,passkey,ruler,needle_nll]",
    "eval.max_tokens=256",
    "eval.batch_size=2",
    "eval.passkey.samples=1",
    "eval.passkey.depths=[0.5]",
    "eval.ruler.tasks=[niah_single_1,niah_single_2,fwe]",
    "eval.ruler.samples=1",
    "eval.ruler.tokens_to_generate=8",
    "eval.needle_nll.samples=1",
    "eval.needle_nll.depths=[0,1]",
]


def check_new_tasks(saved, run, lengths):
    keys = [str(n) for n in lengths]
    assert set(saved["ruler"]["average"]) == set(keys) and saved["ruler"]["tasks"] == ["niah_single_1", "niah_single_2", "fwe"]
    assert saved["ruler"]["average"][keys[0]] is None  # the shortest length cannot hold a RULER prompt: skipped
    assert all(0.0 <= saved["ruler"]["score"]["niah_single_1"][k] <= 100.0 for k in keys[1:])
    assert set(saved["needle_nll"]["nll"]) == set(keys) and saved["needle_nll"]["nll"][keys[-1]] > 0
    assert read_png_data(run / "ruler_heatmap.png")["columns"] == lengths
    assert read_png_data(run / "needle_heatmap.png")["grid"] == saved["needle_nll"]["grid"]["digit_accuracy"]
    report = (run / "report.md").read_text()
    assert "## RULER (1 samples per cell" in report and "## Needle, teacher-forced" in report
    assert "![ruler_heatmap](ruler_heatmap.png)" in report


def test_checkpoint_with_every_generation_task(compose_train, tmp_path):
    from clexlab.utils.checks import preflight_eval
    from clexlab.workflows.evaluate import run_suite, subject_from_checkpoint

    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    cfg = compose_train(f"ckpt_path={tmp_path / 'tiny.ckpt'}", *TASKS, "eval.lengths=[32,520]", config_name="eval")
    logger = FakeLogger()
    payload = run_suite(subject_from_checkpoint(str(cfg.ckpt_path)), preflight_eval(cfg), cfg, [logger])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == json.loads(json.dumps(payload)) and set(saved["ppl"]) == {"32", "520"}  # today's keys stay
    check_new_tasks(saved, tmp_path / "run", [32, 520])
    assert "eval/ruler@520" in logger.metrics and "eval/ruler@32" not in logger.metrics
    assert logger.metrics["eval/needle_nll@520"] == saved["needle_nll"]["nll"]["520"]
    assert logger.tables["eval/ruler_table"][0] == ["task", "32", "520", "mean"]
    assert {"eval/ruler_heatmap", "eval/needle_heatmap", "eval/passkey_heatmap"} <= set(logger.images)


def test_local_hf_directory_with_every_generation_task(compose_train, tmp_path):
    from clexlab.workflows.evaluate import evaluate

    save_tiny_hf_model(tmp_path / "hf")  # save_pretrained of a tiny LLaMA and a character tokenizer
    cfg = compose_train(f"model.path={tmp_path / 'hf'}", *TASKS, "eval.lengths=[32,520]", config_name="eval")
    saved = evaluate(cfg)
    check_new_tasks(saved, tmp_path / "run", [32, 520])
    assert saved["model"] == "hf"


def test_longbench_through_eval_on_files_written_here(compose_train, tmp_path):
    from clexlab.workflows.evaluate import evaluate

    data = tmp_path / "longbench"
    data.mkdir()
    write_jsonl(data / "passage_count.jsonl", [record(answers=["2"], context="Paragraph 1: a\nParagraph 2: b")])
    write_jsonl(data / "trec.jsonl", [record(answers=["LOC"], all_classes=["LOC", "HUM"])])
    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    cfg = compose_train(
        f"ckpt_path={tmp_path / 'tiny.ckpt'}", "eval.tasks=[longbench]", f"eval.longbench.dir={data}",
        "eval.longbench.max_length=600", "eval.lengths=[32]", config_name="eval",
    )
    saved = evaluate(cfg)
    assert set(saved["longbench"]["datasets"]) == {"passage_count", "trec"} and saved["longbench"]["max_length"] == 600
    assert saved["longbench"]["datasets"]["trec"]["metric"] == "classification" and saved["ppl"] == {}
    assert saved["longbench"]["average"] == pytest.approx(
        (saved["longbench"]["datasets"]["trec"]["score"] + saved["longbench"]["datasets"]["passage_count"]["score"]) / 2, abs=0.01
    )
    assert "## LongBench (prompts cut in the middle to 600 tokens)" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["eval.tasks=[ppl,bogus]"], "eval.tasks must be a non-empty subset of ['ppl', 'passkey', 'ruler', 'needle_nll', 'longbench']"),
        (["eval.tasks=[ruler]", "eval.ruler.tasks=[niah_single_9]"], "eval.ruler.tasks: unknown task(s) ['niah_single_9']"),
        (["eval.tasks=[longbench]"], "eval.tasks has longbench but eval.longbench.dir is not set"),
        (["eval.needle_nll.depths=[2]"], "eval.needle_nll.depths must be fractions in [0, 1]"),
    ],
)
def test_bad_options_are_one_line(compose_train, tmp_path, overrides, message):
    from clexlab.utils.checks import preflight_eval

    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    with pytest.raises(UserError) as err:
        preflight_eval(compose_train(f"ckpt_path={tmp_path / 'tiny.ckpt'}", *overrides, config_name="eval"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_one_line_for_a_short_ruler_length_and_a_missing_longbench_dir(compose_train, tmp_path):
    from clexlab.workflows.evaluate import evaluate

    save_fake_checkpoint(tmp_path / "tiny.ckpt")
    common = [f"ckpt_path={tmp_path / 'tiny.ckpt'}", "eval.lengths=[32]"]
    cfg = compose_train(*common, "eval.tasks=[ruler]", "eval.ruler.tasks=[niah_single_1]", "eval.ruler.lengths=[300]",
                        config_name="eval")
    with pytest.raises(UserError) as err:
        evaluate(cfg)
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        "eval.ruler.lengths: 300 tokens is too short for RULER task niah_single_1 (its prompt without haystack is "
    )
    assert message.endswith("tokens, plus 128 for the answer): use longer lengths or drop the task from eval.ruler.tasks")
    cfg = compose_train(*common, "eval.tasks=[longbench]", f"eval.longbench.dir={tmp_path / 'nowhere'}", config_name="eval")
    with pytest.raises(UserError) as err:
        evaluate(cfg)
    assert str(err.value).startswith(f"eval.longbench.dir={tmp_path / 'nowhere'} is not a directory: put LongBench's <dataset>.jsonl")
