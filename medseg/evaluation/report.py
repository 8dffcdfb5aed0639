"""A Markdown report of a CV summary (or of ``medseg evaluate`` output): folds, summaries over folds and cases, per
class, the worst cases and the rules for empty masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.evaluation.aggregate import EMPTY_POLICY, summarize_cases
from medseg.fileio import atomic_write_text


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
    lines += [
        "",
        "| class | Dice | HD95 (mm) | HD95 worst case | absent in both | NSD |",
        "|---|---|---|---|---|---|",
    ]
    for c, s in cases["per_class"].items():
        lines.append(
            f"| {c} | {_pm(s['dice']['mean'], s['dice']['std'])} | "
            f"{_pm(s['hd95']['mean'], s['hd95']['std'], 2)} | {s['hd95'].get('n_worst_case', 0)} | "
            f"{s['dice']['n_undefined']} | {_pm(s['nsd']['mean'], s['nsd']['std'])} |"
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
    missing = cases["missing_predictions"]
    lines += [
        "## Empty masks, worst cases, missing predictions",
        "",
        f"{EMPTY_POLICY[0].upper()}{EMPTY_POLICY[1:]}. "
        f"HD95 took the worst-case value for {cases['hd95_worst_case']} (case, class) pair(s); "
        f"{cases['absent_in_both']} (case, class) pair(s) were absent in both masks. "
        f"{len(missing)} case(s) had no prediction" + (f" ({', '.join(missing[:10])})" if missing else "") + ". "
        "Per-case means average the classes with a score; std is the sample std (ddof=1). "
        "Definitions: docs/evaluation.md.",
        "",
    ]
    unvalidated = summary.get("unvalidated_folds") or []
    if unvalidated:
        lines += [
            f"**Fold(s) {', '.join(map(str, unvalidated))}: no validation ran during training**; their checkpoint "
            "is the final weights, validated once after training (no model selection).",
            "",
        ]
    atomic_write_text(path, "\n".join(lines))
    return Path(path)
