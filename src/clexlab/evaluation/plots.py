"""Figures of a long-context evaluation: perplexity vs length, passkey heatmap, CLEX frequencies.

Drawn on matplotlib ``Figure`` objects with the Agg canvas directly, never
through ``pyplot``: no global backend is switched (a notebook keeps its own),
no display is needed, and figures are freed with their last reference.

Every PNG also carries the numbers it shows, as JSON in a PNG text chunk
named ``clexlab`` (:func:`read_png_data` returns them), so a figure can be
checked against ``results.json`` without reading pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

PNG_KEY = "clexlab"


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={PNG_KEY: json.dumps(data)})
    return path


def read_png_data(path: str | Path) -> dict[str, Any]:
    """The numbers embedded in a PNG written by this module."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text[PNG_KEY])


def plot_ppl_vs_length(
    ppl: Mapping[Any, float],
    train_length: int,
    path: str | Path,
    max_scale: int | None = None,
    label: str = "ppl",
    title: str | None = None,
) -> dict[str, Any]:
    """Perplexity against evaluation length (log2 axis), with L and ``t_max · L`` marked.

    Args:
        ppl: ``{length: perplexity}`` (keys may be strings, as in ``results.json``).
        train_length: the model's train length L.
        path: the PNG to write.
        max_scale: CLEX ``t_max``; marks the longest length its ODE was trained for.
        label: legend label of the curve (e.g. the protocol).
        title: figure title.

    Returns:
        The plotted numbers (also embedded in the PNG).
    """
    lengths = sorted(int(n) for n in ppl)
    values = [float(ppl[_key(ppl, n)]) for n in lengths]
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(lengths, values, marker="o", label=label)
    for n, v in zip(lengths, values):
        ax.annotate(f"{v:.2f}", (n, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.axvline(train_length, color="grey", linestyle="--", linewidth=1, label=f"L = {train_length}")
    if max_scale and max_scale > 1:
        ax.axvline(max_scale * train_length, color="tab:red", linestyle=":", linewidth=1, label=f"t_max·L = {max_scale * train_length}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    if values and all(v > 0 and math.isfinite(v) for v in values) and max(values) / min(values) > 20:
        ax.set_yscale("log")  # one blown-up length must not flatten the others
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title(title or "Held-out perplexity vs length")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    data = {"lengths": lengths, "ppl": values, "train_length": int(train_length)}
    _save(fig, path, data)
    return data


def _key(mapping: Mapping[Any, Any], n: int) -> Any:
    return n if n in mapping else str(n)


def plot_passkey_heatmap(passkey: Mapping[str, Any], path: str | Path, title: str | None = None) -> dict[str, Any]:
    """Accuracy per (length, depth) cell as a heatmap, each cell annotated.

    Args:
        passkey: ``{"lengths": [...], "depths": [...], "accuracy": [[...]]}`` (rows = lengths).
        path: the PNG to write.
        title: figure title.

    Returns:
        The plotted grid (also embedded in the PNG).
    """
    lengths, depths = list(passkey["lengths"]), list(passkey["depths"])
    grid = [[None if v is None else float(v) for v in row] for row in passkey["accuracy"]]
    fig = _figure(2.2 + 0.9 * len(depths), 1.6 + 0.45 * len(lengths))
    ax = fig.add_subplot()
    # Cells that did not run (length too short for the prompt) are NaN: drawn blank, marked n/a.
    values = [[math.nan if v is None else v for v in row] for row in grid]
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto", origin="lower")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(lengths)), [str(n) for n in lengths])
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, "n/a" if v is None else f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("key depth")
    ax.set_ylabel("prompt length (tokens)")
    ax.set_title(title or "Passkey retrieval accuracy")
    fig.colorbar(image, ax=ax)
    data = {"lengths": lengths, "depths": depths, "accuracy": grid}
    _save(fig, path, data)
    return data


def plot_heatmap(
    rows: Sequence[Any],
    columns: Sequence[Any],
    grid: Sequence[Sequence[float | None]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
    vmax: float = 1.0,
    fmt: str = "{:.2f}",
) -> dict[str, Any]:
    """A score grid (rows x columns) as an annotated heatmap; ``None`` cells are blank and marked n/a.

    The generic form of :func:`plot_passkey_heatmap`, for task x length grids
    (RULER) and other scores on ``[0, vmax]``.

    Returns:
        ``{"rows", "columns", "grid"}`` (also embedded in the PNG).
    """
    grid = [[None if v is None else float(v) for v in row] for row in grid]
    fig = _figure(2.6 + 0.9 * len(columns), 1.6 + 0.4 * len(rows))
    ax = fig.add_subplot()
    values = [[math.nan if v is None else v for v in row] for row in grid]
    image = ax.imshow(values, vmin=0.0, vmax=vmax, cmap="RdYlGn", aspect="auto", origin="upper")
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, "n/a" if v is None else fmt.format(v), ha="center", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    data = {"rows": list(rows), "columns": list(columns), "grid": grid}
    _save(fig, path, data)
    return data


def clex_frequency_curves(
    rope, indices: Sequence[int] | None = None, n_points: int = 121, t_end: float | None = None
) -> dict[str, Any]:
    """Learned, NTK (``alpha = 2t - 1``) and PI log-frequencies on a fine grid of t.

    Args:
        rope: a :class:`clexlab.rope.CLEXRotaryEmbedding`.
        indices: frequency indices ``i`` (of ``d/2``) to show; default four spread over the range.
        n_points: grid points from t = 1 to ``t_end``.
        t_end: last t (default the module's ``t_max``).

    Returns:
        ``{"t": [...], "indices": [...], "learned": [[...] per index], "ntk": ..., "pi": ...}``.
    """
    from clexlab.rope.fast_solver import solve_log_inv_freq_fast

    half = rope.head_dim // 2
    if indices is None:
        indices = sorted({round(k * (half - 1) / 3) for k in range(4)})
    indices = [int(i) for i in indices]
    t_end = float(t_end or max(rope.max_scale, 2))
    times = torch.linspace(1.0, t_end, n_points, dtype=torch.float64)
    z0 = rope.log_inv_freq0.detach().float().cpu()
    dynamics = rope.dynamics
    with torch.no_grad():
        learned = solve_log_inv_freq_fast(dynamics, z0.to(dynamics.up_proj.device), times).cpu()
        ntk = torch.stack([dynamics.ntk_log_inv_freq(t) for t in times])
    pi = z0[None, :] - torch.log(times.float())[:, None]
    return {
        "t": times.tolist(),
        "indices": indices,
        "learned": learned[:, indices].T.tolist(),
        "ntk": ntk[:, indices].T.tolist(),
        "pi": pi[:, indices].T.tolist(),
    }


def plot_clex_frequencies(rope, path: str | Path, indices: Sequence[int] | None = None, n_points: int = 121) -> dict[str, Any]:
    """Learned CLEX log-frequency against t for a few indices, beside NTK and PI.

    Args:
        rope: a :class:`clexlab.rope.CLEXRotaryEmbedding`.
        path: the PNG to write.
        indices: frequency indices to show (default four spread over ``d/2``).
        n_points: grid points from 1 to ``t_max``.

    Returns:
        The plotted curves (also embedded in the PNG).
    """
    data = clex_frequency_curves(rope, indices, n_points)
    fig = _figure(7.2, 4.6)
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    for k, i in enumerate(data["indices"]):
        c = colors[k % len(colors)]
        ax.plot(data["t"], data["learned"][k], color=c, linewidth=2, label=f"i={i} CLEX")
        ax.plot(data["t"], data["ntk"][k], color=c, linestyle="--", linewidth=1, label=f"i={i} NTK (α=2t−1)")
        ax.plot(data["t"], data["pi"][k], color=c, linestyle=":", linewidth=1, label=f"i={i} PI")
    ax.set_xlabel("scale t = length / L")
    ax.set_ylabel("log inv_freq")
    ax.set_title("CLEX frequencies vs scale")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=len(data["indices"]), loc="lower left")
    _save(fig, path, data)
    return data
