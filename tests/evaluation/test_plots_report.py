"""Figures carry the numbers they show; the report holds the tables; the frequency curves are right."""

import math

import pytest
import torch

from clexlab.evaluation import (
    LengthResult,
    clex_frequency_curves,
    format_passkey_table,
    format_report,
    plot_clex_frequencies,
    plot_passkey_heatmap,
    plot_ppl_vs_length,
    read_png_data,
    results_payload,
)

PASSKEY = {"lengths": [256, 512], "depths": [0.0, 0.5, 1.0], "accuracy": [[None, None, None], [1.0, 0.4, 0.0]], "n_samples": 5, "seed": 0}


def test_ppl_figure_holds_the_numbers(tmp_path):
    ppl = {"32": 4.0, "64": 4.5, "256": 900.0}
    path = tmp_path / "ppl.png"
    data = plot_ppl_vs_length(ppl, 32, path, max_scale=4, label="sliding, stride 16")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert read_png_data(path) == data == {"lengths": [32, 64, 256], "ppl": [4.0, 4.5, 900.0], "train_length": 32}


def test_passkey_heatmap_holds_the_grid_with_skipped_cells(tmp_path):
    path = tmp_path / "pk.png"
    plot_passkey_heatmap(PASSKEY, path)
    assert read_png_data(path) == {k: PASSKEY[k] for k in ("lengths", "depths", "accuracy")}


def test_clex_curves_start_together_and_untrained_clex_is_ntk(tiny_module, tmp_path):
    rope = tiny_module.clex_rope  # down_proj = 0: the untrained ODE is exactly NTK with alpha = 2t - 1
    curves = clex_frequency_curves(rope, indices=[1, 5], n_points=31)
    assert curves["t"][0] == 1.0 and curves["t"][-1] == rope.max_scale
    z0 = rope.log_inv_freq0
    for k, i in enumerate([1, 5]):
        assert curves["learned"][k][0] == pytest.approx(z0[i].item(), abs=1e-6)
        assert curves["learned"][k] == pytest.approx(curves["ntk"][k], abs=1e-5)
        assert curves["pi"][k] == pytest.approx([z0[i].item() - math.log(t) for t in curves["t"]], abs=1e-5)
        assert curves["ntk"][k][-1] < curves["ntk"][k][0]  # NTK lowers every frequency but the first
    with torch.no_grad():
        rope.dynamics.down_proj.normal_(0, 0.3)
    moved = clex_frequency_curves(rope, indices=[1, 5], n_points=31)
    table = rope.frequency_table()  # the module's own eval table at integer t agrees with the fine grid
    assert moved["learned"][1][-1] == pytest.approx(table[-1, 5].item(), abs=1e-5)
    assert moved["learned"][1] != pytest.approx(moved["ntk"][1], abs=1e-3)
    data = plot_clex_frequencies(rope, tmp_path / "f.png", indices=[1, 5], n_points=31)
    assert read_png_data(tmp_path / "f.png") == data


def test_report_holds_both_tables():
    results = {32: LengthResult(32, 100 * math.log(4.0), 100), 64: LengthResult(64, 100 * math.log(5.0), 100)}
    payload = results_payload(results, 32, protocol="sliding", stride=16, passkey=PASSKEY, model="tiny", rope="clex")
    report = format_report(payload, {"ppl_vs_length": "ppl_vs_length.png"})
    assert "## Perplexity (sliding, stride 16; 100 target tokens per length)" in report
    assert "| 64 | 2 | 5.000 | 1.250 | 100 |" in report
    assert "| 512 | 1.00 | 0.40 | 0.00 | 0.47 |" in report
    assert "| 256 | – | – | – | – |" in report
    assert "![ppl_vs_length](ppl_vs_length.png)" in report and "- rope: `clex`" in report
    assert format_passkey_table(PASSKEY).splitlines()[0] == "| length | depth 0 | depth 0.5 | depth 1 | mean |"
    only_passkey = format_report(results_payload({}, 32, passkey=PASSKEY))
    assert "Perplexity" not in only_passkey and "Passkey" in only_passkey
