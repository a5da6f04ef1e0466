import json

import pytest

from clexlab.summarize import find_results, main, summarize, write_summary


def make_run(root, name, method, ppl, seed=0, L=128):
    run = root / name
    run.mkdir(parents=True)
    payload = {"train_length": L, "ppl": {str(k): v for k, v in ppl.items()}, "method": method, "seed": seed}
    (run / "results.json").write_text(json.dumps(payload))
    return run


def test_summary_of_hand_made_runs(tmp_path):
    make_run(tmp_path, "0", "clex", {128: 4.0, 256: 4.4, 512: 5.0}, seed=0)
    make_run(tmp_path, "1", "clex", {128: 5.0, 256: 5.5, 512: 6.0}, seed=1)
    make_run(tmp_path, "2", "none", {128: 3.0, 256: 6.0, 512: 12.0})
    (tmp_path / "3").mkdir()  # an unfinished run: no results.json, ignored
    runs = find_results([tmp_path])
    assert len(runs) == 3
    summary = summarize(runs)
    clex = summary["methods"]["clex"]["lengths"]
    assert clex["256"]["ppl"]["mean"] == pytest.approx(4.95)
    assert clex["256"]["ppl"]["std"] == pytest.approx(1.1 / 2**0.5)
    assert clex["512"]["ratio"]["mean"] == pytest.approx((5.0 / 4.0 + 6.0 / 5.0) / 2)
    assert summary["methods"]["none"]["lengths"]["512"]["ratio"]["mean"] == pytest.approx(4.0)
    assert summary["methods"]["clex"]["seeds"] == [0, 1]

    files = write_summary(tmp_path, runs)
    md = files["md"].read_text()
    assert "| clex | 2 | 4.500 ± 0.707 | 4.950 ± 0.778 | 5.500 ± 0.707 |" in md
    assert "| none | 1 | 3.000 | 6.000 | 12.000 |" in md
    assert "| none | 1 | 1.000 | 2.000 | 4.000 |" in md
    assert json.loads(files["json"].read_text())["lengths"] == [128, 256, 512]
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["png"].stat().st_size > 5000


def test_cli_rebuilds_from_several_directories(tmp_path, capsys):
    make_run(tmp_path / "a", "run", "pi-x8", {64: 3.0, 128: 3.3}, L=64)
    make_run(tmp_path / "b", "run", "yarn-x8", {64: 3.1, 128: 3.2}, L=64)
    out = tmp_path / "report"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert "yarn-x8" in (out / "summary.md").read_text()
    assert main([str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "error: no results.json" in capsys.readouterr().err
