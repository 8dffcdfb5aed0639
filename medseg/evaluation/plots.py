"""Figures and a Markdown report of a ``cv_summary`` (or of ``medseg evaluate`` output).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot state, no display,
whatever backend the user has configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import atomic_write_text
from medseg.evaluation.aggregate import EMPTY_POLICY, summarize_cases


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
    from medseg.viz import new_figure, save_png

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


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _pm(mean: Any, std: Any, digits: int = 3) -> str:
    return "–" if mean is None else f"{_num(mean, digits)} ± {_num(std, digits)}"


def _fold_table(summary: dict[str, Any], classes: list[str]) -> list[str]:
    head = "| fold | cases | Dice | HD95 (mm) | NSD | " + " | ".join(f"Dice {c}" for c in classes) + " |"
    lines = ["## Folds", "", head, "|" + "---|" * (5 + len(classes))]
    for f in summary["folds"]:
        per_class = " | ".join(_num(f.get("dice_per_class", {}).get(c)) for c in classes)
        lines.append(
            f"| {f['fold']} | {f['n_cases']} | {_num(f['dice_mean'])} | {_num(f['hd95_mean'], 2)} | "
            f"{_num(f['nsd_mean'])} | {per_class} |"
        )
    return [*lines, ""]


def _overall_table(summary: dict[str, Any], cases: dict[str, Any]) -> list[str]:
    has_folds = "folds" in summary
    lines = [
        "## Summary",
        "",
        "| metric | mean ± std over folds | mean ± std over cases |"
        if has_folds
        else "| metric | mean ± std over cases |",
        "|---|---|---|" if has_folds else "|---|---|",
    ]
    for m, label, digits in (("dice", "Dice", 3), ("hd95", "HD95 (mm)", 2), ("nsd", "NSD", 3)):
        over_cases = _pm(cases[f"{m}_case_mean"], cases[f"{m}_case_std"], digits)
        over_folds = f" {_pm(summary.get(f'{m}_mean'), summary.get(f'{m}_std'), digits)} |" if has_folds else ""
        lines.append(f"| {label} |{over_folds} {over_cases} |")
    lines += ["", "| class | Dice | HD95 (mm) | HD95 undefined | NSD |", "|---|---|---|---|---|"]
    for c, s in cases["per_class"].items():
        lines.append(
            f"| {c} | {_pm(s['dice']['mean'], s['dice']['std'])} | "
            f"{_pm(s['hd95']['mean'], s['hd95']['std'], 2)} | {s['hd95']['n_undefined']} | "
            f"{_pm(s['nsd']['mean'], s['nsd']['std'])} |"
        )
    return [*lines, ""]


def _worst_cases(rows: list[dict[str, Any]], k: int = 5) -> list[str]:
    scored = sorted((r for r in rows if r.get("dice_mean") is not None), key=lambda r: r["dice_mean"])[:k]
    lines = [
        f"## Worst {len(scored)} cases (by mean Dice)",
        "",
        "| case | fold | Dice | HD95 (mm) | NSD |",
        "|---|---|---|---|---|",
    ]
    for r in scored:
        fold = "–" if r.get("fold") is None else r["fold"]
        lines.append(
            f"| {r['case']} | {fold} | {_num(r['dice_mean'])} | {_num(r.get('hd95_mean'), 2)} | "
            f"{_num(r.get('nsd_mean'))} |"
        )
    return [*lines, ""]


def write_report_md(summary: dict[str, Any], path: str | Path, title: str = "Evaluation report") -> Path:
    """Write a short Markdown report: folds, mean ± std over folds and cases, per class, worst cases, empty rules."""
    rows = summary["per_case"]
    cases = summarize_cases(rows)
    classes = cases["classes"]
    n_folds = f"{summary['n_folds']} folds, " if "n_folds" in summary else ""
    tol = summary.get("nsd_tolerance_mm")
    lines = [
        f"# {title}",
        "",
        f"{n_folds}{len(rows)} cases, classes: {', '.join(classes) or '–'}."
        + (f" NSD tolerance {tol} mm." if tol is not None else ""),
        "",
    ]
    if summary.get("folds"):
        lines += _fold_table(summary, classes)
    lines += _overall_table(summary, cases)
    lines += _worst_cases(rows)
    lines += [
        "## Empty masks",
        "",
        f"{EMPTY_POLICY[0].upper()}{EMPTY_POLICY[1:]}. "
        f"HD95 was undefined for {cases['hd95_undefined']} (case, class) pair(s). "
        "Per-case means average the classes with a defined value; std is the sample std (ddof=1).",
        "",
    ]
    atomic_write_text(path, "\n".join(lines))
    return Path(path)
