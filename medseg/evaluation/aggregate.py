"""Summaries of per-case metrics: over cases, per class, and over the folds of a cross-validation.

Conventions used everywhere in this module:

- std is the *sample* standard deviation (``ddof=1``) when at least two values exist, else ``0.0``.
- ``None`` metric values — a class absent from both prediction and reference (see :mod:`medseg.evaluation.metrics`)
  — are excluded from means/stds/medians and counted (per class ``n_undefined``, overall ``absent_in_both``); a
  statistic over no value is ``None``. A worst-case HD95 (one mask empty: the image diagonal) is a value like any
  other and is counted (per class ``n_worst_case``, overall ``hd95_worst_case``).
- A case's ``<metric>_mean`` is the mean over its classes with a defined value; a case whose every class is absent
  has none and is left out of the over-cases statistics (``cases_without_foreground``). "Over cases" statistics
  (``dice_case_mean``) treat every case alike; "over folds" statistics (``dice_mean``/``dice_std`` of a CV) are the
  mean/std of the per-fold means (each the mean over that fold's cases).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.fileio import atomic_write_text

SUMMARY_METRICS = ("dice", "hd95", "nsd")
CSV_METRICS = ("dice", "hd95", "nsd", "vol_diff_ml")
EMPTY_POLICY = (
    "a class absent from both masks has no score (null): it is excluded from every mean and counted in "
    "absent_in_both; only one mask empty: dice=iou=nsd=0 and hd95 = the image diagonal in mm (worst case), "
    "included in every mean and counted in hd95_worst_case"
)


def _defined(values: Iterable[Any]) -> list[float]:
    out = []
    for v in values:
        if v is not None and math.isfinite(float(v)):
            out.append(float(v))
    return out


def mean_or_none(values: Iterable[Any]) -> float | None:
    """Mean of the defined values, ``None`` when there is none."""
    vals = _defined(values)
    return float(np.mean(vals)) if vals else None


def std_or_none(values: Iterable[Any]) -> float | None:
    """Sample std (ddof=1) of the defined values; 0.0 for one value, ``None`` for none."""
    vals = _defined(values)
    if not vals:
        return None
    return float(np.std(vals, ddof=1)) if len(vals) >= 2 else 0.0


def describe(values: Sequence[Any]) -> dict[str, Any]:
    """``{mean, std, median, n, n_undefined}`` of a list that may hold ``None``."""
    vals = _defined(values)
    return {
        "mean": mean_or_none(vals),
        "std": std_or_none(vals),
        "median": float(np.median(vals)) if vals else None,
        "n": len(vals),
        "n_undefined": len(values) - len(vals),
    }


def case_means(metrics: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """``{dice_mean, hd95_mean, nsd_mean}`` of one case: means over its classes with a defined value."""
    return {f"{m}_mean": mean_or_none(cm.get(m) for cm in metrics.values()) for m in SUMMARY_METRICS}


def _classes(per_case: Sequence[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for row in per_case:
        names.update(dict.fromkeys(row.get("metrics", {})))
    return list(names)


def _complete_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with ``dice_mean``/``hd95_mean``/``nsd_mean`` filled in from its metrics where absent."""
    out = dict(row)
    for key, value in case_means(row.get("metrics", {})).items():
        if out.get(key) is None:
            out[key] = value
    return out


def summarize_cases(per_case: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Statistics over cases, per class and over classes.

    Args:
        per_case: rows ``{"case", "metrics": {class: {dice, hd95, nsd, ...}}, "dice_mean"?}``.

    Returns:
        ``{"n_cases", "classes", "per_class": {class: {dice|hd95|nsd: describe()}}, "dice_case_mean",
        "dice_case_std", "dice_case_median", (same for hd95, nsd), "absent_in_both", "hd95_worst_case",
        "cases_without_foreground", "missing_predictions"}``; the ``*_case_*`` values are over the per-case means;
        ``absent_in_both`` counts (case, class) pairs without a score, ``hd95_worst_case`` those whose HD95 is the
        worst-case value (per class: ``hd95.n_worst_case``).
    """
    rows = [_complete_row(r) for r in per_case]
    classes = _classes(rows)
    per_class = {
        c: {m: describe([r["metrics"].get(c, {}).get(m) for r in rows if c in r["metrics"]]) for m in SUMMARY_METRICS}
        for c in classes
    }
    for c, stats in per_class.items():
        stats["hd95"]["n_worst_case"] = sum(
            1 for r in rows if r["metrics"].get(c, {}).get("hd95_worst_case") and r["metrics"][c]["hd95"] is not None
        )
    out: dict[str, Any] = {"n_cases": len(rows), "classes": classes, "per_class": per_class}
    for m in SUMMARY_METRICS:
        stats = describe([r[f"{m}_mean"] for r in rows])
        out.update(
            {f"{m}_case_mean": stats["mean"], f"{m}_case_std": stats["std"], f"{m}_case_median": stats["median"]}
        )
    out["absent_in_both"] = sum(s["dice"]["n_undefined"] for s in per_class.values())
    out["hd95_worst_case"] = sum(s["hd95"]["n_worst_case"] for s in per_class.values())
    out["cases_without_foreground"] = [r["case"] for r in rows if r["dice_mean"] is None]
    out["missing_predictions"] = [r["case"] for r in rows if r.get("missing_prediction")]
    return out


def _fold_entry(fold: dict[str, Any], rows: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    entry = {k: v for k, v in fold.items() if k != "per_case"}
    entry.update({"fold": fold["fold"], "n_cases": len(rows)})
    for m in SUMMARY_METRICS:
        entry[f"{m}_mean"] = mean_or_none(r[f"{m}_mean"] for r in rows)
    entry["dice_per_class"] = {
        c: mean_or_none(r["metrics"].get(c, {}).get("dice") for r in rows if c in r["metrics"]) for c in classes
    }
    return entry


def aggregate_cv(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``cv_summary`` of a cross-validation from the test results of its folds.

    Args:
        folds: one ``{"fold": k, "per_case": [{"case", "metrics": {class: {...}}, "dice_mean"}, ...]}`` per fold;
            other keys of a fold are copied into its ``folds`` entry.

    Returns:
        ``{"n_folds", "n_cases", "classes", "folds": [{fold, n_cases, dice_mean, hd95_mean, nsd_mean,
        dice_per_class}], "per_case": [rows with "fold", "dice_mean", "hd95_mean", "nsd_mean"],
        "dice_mean", "dice_std"`` (mean/std of the fold means), ``"dice_case_mean", "dice_case_std"`` (over all
        cases), the same four for ``hd95`` and ``nsd``, ``"absent_in_both", "hd95_worst_case",
        "cases_without_foreground", "unvalidated_folds", "per_class", "std", "empty_policy"}``.
        Stds are sample stds (ddof=1), 0.0 when fewer than two values.
    """
    per_case: list[dict[str, Any]] = []
    fold_rows: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for fold in sorted(folds, key=lambda f: f["fold"]):
        rows = [{**_complete_row(r), "fold": fold["fold"]} for r in fold.get("per_case", [])]
        fold_rows.append((fold, rows))
        per_case.extend(rows)
    cases = summarize_cases(per_case)
    fold_entries = [_fold_entry(f, rows, cases["classes"]) for f, rows in fold_rows]
    out: dict[str, Any] = {
        "n_folds": len(fold_entries),
        "n_cases": len(per_case),
        "classes": cases["classes"],
        "folds": fold_entries,
        "per_case": per_case,
    }
    for m in SUMMARY_METRICS:
        fold_means = [f[f"{m}_mean"] for f in fold_entries]
        out.update(
            {
                f"{m}_mean": mean_or_none(fold_means),
                f"{m}_std": std_or_none(fold_means),
                f"{m}_case_mean": cases[f"{m}_case_mean"],
                f"{m}_case_std": cases[f"{m}_case_std"],
            }
        )
    out.update(
        absent_in_both=cases["absent_in_both"],
        hd95_worst_case=cases["hd95_worst_case"],
        cases_without_foreground=cases["cases_without_foreground"],
        unvalidated_folds=[f["fold"] for f in fold_entries if f.get("validated_in_training") is False],
        per_class=cases["per_class"],
        std="sample standard deviation (ddof=1); 0.0 when fewer than two values",
        empty_policy=EMPTY_POLICY,
    )
    return out


def _fmt(value: Any) -> str:
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def write_per_case_csv(summary: dict[str, Any], path: str | Path) -> Path:
    """Write ``case, fold, dice_mean, <class>_dice, <class>_hd95, <class>_nsd, <class>_vol_diff_ml, ...`` atomically.

    Works for a ``cv_summary`` and for :func:`~medseg.evaluation.metrics.evaluate_folder` output (empty ``fold``).
    Undefined values are empty cells.
    """
    rows = summary["per_case"]
    classes = summary.get("classes") or _classes(rows)
    header = ["case", "fold", "dice_mean"] + [f"{c}_{m}" for c in classes for m in CSV_METRICS]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = [row["case"], row.get("fold"), row.get("dice_mean")]
        values += [row["metrics"].get(c, {}).get(m) for c in classes for m in CSV_METRICS]
        writer.writerow([_fmt(v) for v in values])
    atomic_write_text(path, buf.getvalue())
    return Path(path)
