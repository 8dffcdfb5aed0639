"""Pictures of evaluation results: per-case Dice by fold, and the methods compared on a Turbolift final stage.

Drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display, whatever backend
the user has configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.viz._figure import new_figure, save_png


def _groups(summary: dict[str, Any]) -> dict[str, list[float]]:
    """Per-case Dice grouped by fold (one group ``all`` when the rows carry no fold)."""
    groups: dict[str, list[float]] = {}
    for row in summary["per_case"]:
        fold = row.get("fold")
        key = "all" if fold is None else f"fold {fold}"
        if row.get("dice_mean") is not None:
            groups.setdefault(key, []).append(float(row["dice_mean"]))
    return groups


def plot_per_case_dice(summary: dict[str, Any], path: str | Path) -> Path:
    """Save a PNG with one box per fold and every case as a jittered point (per-case mean foreground Dice)."""
    groups = _groups(summary)
    names = list(groups) or ["all"]
    fig = new_figure(max(4.0, 1.2 * len(names) + 2.0), 4.0)
    ax = fig.add_subplot()
    data = [groups.get(n, []) for n in names]
    filled = [i for i, values in enumerate(data, start=1) if values]
    if filled:
        ax.boxplot([data[i - 1] for i in filled], positions=filled, showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(names) + 1), names)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.7, zorder=3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("per-case Dice (mean over classes)")
    n = sum(len(v) for v in data)
    ax.set_title(f"Per-case Dice ({n} cases)")
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path, dpi=120)


def plot_methods(values: dict[str, list[float]], path: str | Path) -> Path:
    """Per-case Dice of each method on a Turbolift final stage (box + points).

    Args:
        values: method name → per-case Dice values.
        path: the PNG to write.
    """
    fig = new_figure(1.8 + 1.6 * len(values), 4)
    ax = fig.add_subplot()
    ax.boxplot(list(values.values()), tick_labels=list(values))
    for i, v in enumerate(values.values(), start=1):
        ax.plot([i] * len(v), v, "o", alpha=0.6)
    ax.set_ylabel("per-case Dice (final stage)")
    ax.set_ylim(0, 1)
    ax.set_title("Turbolift vs baselines")
    return save_png(fig, path)
