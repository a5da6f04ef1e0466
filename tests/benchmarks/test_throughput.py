"""benchmarks/throughput.py runs end to end at a minuscule size and prints a table that parses."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from tests.conftest import ROOT, run_cli

SCRIPT = ROOT / "benchmarks" / "throughput.py"
MINUSCULE = [
    "--set", "hidden_size=32", "--set", "intermediate_size=64", "--set", "num_layers=1",
    "--seq-len", "16", "32", "--batch", "2", "--steps", "2", "--warmup", "1", "--max-scale", "4",
]


def _load():
    spec = importlib.util.spec_from_file_location("bench_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert lines and lines[0].startswith("| method |"), stdout
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_table_parses_and_ratios_are_positive(tmp_path):
    out = tmp_path / "rows.json"
    res = run_cli(str(SCRIPT), *MINUSCULE, "--peak-tflops", "1", "--json", str(out), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _table_rows(res.stdout)
    assert [(r[0], r[1]) for r in rows] == [("plain", "16"), ("clex", "16"), ("plain", "32"), ("clex", "32")]
    for method, seq, batch, tps, step_ms, tflops, mfu, mem, ratio in rows:
        assert batch == "2" and float(tps) > 0 and float(step_ms.split()[0]) > 0 and float(tflops) > 0
        assert mfu.endswith("%") and mem == "n/a"  # CPU: no GPU memory figure
        assert float(ratio) > 0 and (method == "clex" or float(ratio) == 1.0)
    summary = next(line for line in res.stdout.splitlines() if line.startswith("CLEX/plain tokens/s ratio:"))
    assert [float(x.split(":")[1]) > 0 for x in summary.split("ratio:")[1].split(",")] == [True, True]
    saved = json.loads(out.read_text())
    for row in saved["rows"]:
        # tokens/s is batch*seq/median step; MFU is achieved FLOP/s over the 1 TFLOP/s peak given.
        assert row["tokens_per_s"] == pytest.approx(row["batch"] * row["seq_len"] / (row["step_ms"][0] / 1e3))
        assert row["mfu"] == pytest.approx(row["flops_per_token"] * row["tokens_per_s"] / 1e12)


def test_cpu_mfu_is_na_without_a_peak():
    res = run_cli(str(SCRIPT), *MINUSCULE, "--seq-len", "8", "--steps", "1", "--warmup", "0", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _table_rows(res.stdout)
    assert len(rows) == 2 and all(r[6] == "n/a" for r in rows)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "no_such_model"], "no model config"),
        (["--set", "colour=blue"], "--set 'colour=blue'"),
        (["--seq-len", "1"], "--seq-len must be >= 2"),
        (["--set", "num_heads=3"], "multiple of num_heads"),
    ],
)
def test_bad_input_is_one_line(args, message):
    res = run_cli(str(SCRIPT), *args, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr and "Traceback" not in res.stderr


def test_flop_count_matches_the_formula():
    """6*N (blocks + LM head, no input embedding) + 12*layers*width*seq/2, on a model built in code."""
    from clexlab.models.builder import build_model

    bench = _load()
    cfg = bench.load_model_cfg("llama1b", ["hidden_size=64", "num_layers=2", "intermediate_size=96", "num_heads=4",
                                           "num_kv_heads=2", "vocab_size=100"])
    model = build_model({**cfg, "train_length": 64}, cfg["vocab_size"])
    hd = 16
    per_layer = 64 * 64 * 2 + 2 * 64 * 2 * hd + 3 * 64 * 96 + 2 * 64  # q, o; k, v (GQA); mlp; two norms
    n = 2 * per_layer + 64 + 64 * 100  # + final norm + LM head
    flops, counted = bench.flops_per_token(model, 256, causal=True)
    assert counted == n
    assert flops == 6 * n + 6 * 2 * 64 * 256
    assert bench.flops_per_token(model, 256, causal=False)[0] == 6 * n + 12 * 2 * 64 * 256


def test_peak_lookup(monkeypatch):
    bench = _load()
    cuda = torch.device("cuda")
    for name, peak in (("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                       ("NVIDIA H100 PCIe", 756.0)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, _n=name: _n)
        assert bench.peak_tflops(cuda, torch.bfloat16, None)[0] == peak
    assert bench.peak_tflops(cuda, None, None)[0] is None  # fp32: the table has bf16 peaks only
    assert bench.peak_tflops(torch.device("cpu"), torch.bfloat16, None)[0] is None
    assert bench.peak_tflops(torch.device("cpu"), None, 2.5)[0] == 2.5


def test_out_of_memory_is_a_row_not_a_crash(monkeypatch, capsys):
    bench = _load()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr(bench, "run_seq_len", oom)
    assert bench.main(["--seq-len", "64", "--steps", "1"]) == 0
    out, err = capsys.readouterr()
    assert "| plain | 64 | 4 | OOM |" in out and "| clex | 64 | 4 | OOM |" in out
    assert "ratio: n/a" in out and "out of memory at seq len 64" in err
