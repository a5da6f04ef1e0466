"""``python -m clexlab.summarize`` reads the retrieval keys of results.json: tables in percent, plot panels."""

import json

import pytest

from clexlab.summarize import find_results, main, retrieval_scores, summarize


def run_payload(method, seed, passkey_row, ruler_avg):
    return {
        "train_length": 512,
        "method": method,
        "seed": seed,
        "ppl": {"512": 3.0, "1024": 4.0},
        "passkey": {"lengths": [512, 1024], "depths": [0.0, 1.0], "accuracy": [passkey_row, [None, None]], "n_samples": 2, "seed": seed},
        "ruler": {
            "tasks": ["niah_single_1"], "lengths": [512, 1024],
            "score": {"niah_single_1": {"512": ruler_avg, "1024": None}},
            "average": {"512": ruler_avg, "1024": None}, "task_average": {"niah_single_1": ruler_avg},
        },
        "needle_nll": {"lengths": [512], "depths": [0.5], "nll": {"512": 2.0}, "digit_accuracy": {"512": 0.25}},
    }


def write(root, name, payload):
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(payload))


def test_retrieval_scores_of_one_run():
    scores = retrieval_scores(run_payload("clex", 0, [1.0, 0.5], 80.0))
    # passkey: mean over depths in percent; a length with no cell that ran is left out
    assert scores == {"passkey": {"512": 75.0}, "ruler": {"512": 80.0}, "ruler/niah_single_1": {"512": 80.0}, "needle": {"512": 25.0}}
    assert retrieval_scores({"ppl": {}}) == {}


def test_summary_tables_and_plot(tmp_path, capsys):
    write(tmp_path, "a", run_payload("clex", 0, [1.0, 0.5], 80.0))
    write(tmp_path, "b", run_payload("clex", 1, [0.0, 0.5], 60.0))
    write(tmp_path, "c", run_payload("none", 0, [1.0, 1.0], 100.0))
    summary = summarize(find_results([tmp_path]))
    assert summary["retrieval"] == ["passkey", "ruler", "ruler/niah_single_1", "needle"]
    clex = summary["methods"]["clex"]["retrieval"]
    assert clex["passkey"]["512"]["mean"] == pytest.approx((75.0 + 25.0) / 2) and clex["ruler"]["512"]["n"] == 2
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "summary.md").read_text()
    assert "## Passkey accuracy (%, mean over depths)" in md and "## RULER niah_single_1 (%)" in md
    assert "| clex | 2 | 50.0 ± 35.4 |" in md and "| none | 1 | 100.0 |" in md
    assert "| clex | 2 | 25.0 ± 0.0 |" in md  # needle digit accuracy, the same in both seeds
    png = (tmp_path / "ppl_vs_length.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["retrieval"][0] == "passkey"
    assert "Passkey accuracy" in capsys.readouterr().out
