"""Paired comparison of two runs on the same cases: bootstrap CI, Wilcoxon signed-rank and Mann–Whitney U tests.

Differences are always ``b - a`` (run B minus run A): a positive ``mean_diff`` means B scores higher, which is
better for Dice/NSD and worse for HD95.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

_CASE_METRICS = ("dice", "iou", "hd95", "nsd", "vol_pred_ml", "vol_ref_ml", "vol_diff_ml", "tp", "fp", "fn")


def _is_defined(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def bootstrap_ci(diff: np.ndarray, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diff`` (cases resampled with replacement, in chunks)."""
    rng = np.random.default_rng(seed)
    n = len(diff)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _wilcoxon_p(diff: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    if not np.any(diff != 0):
        return 1.0  # no difference at all: scipy cannot rank all-zero differences
    return float(wilcoxon(diff, alternative="two-sided").pvalue)


def _mannwhitney_p(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    if np.array_equal(np.sort(a), np.sort(b)):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def compare_cases(a: dict[str, Any], b: dict[str, Any], n_boot: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Compare per-case values of run A and run B on the cases they share.

    Args:
        a: ``{case id: value}`` of run A (``None``/NaN values allowed: such cases are left out and counted).
        b: ``{case id: value}`` of run B.
        n_boot: bootstrap resamples for the 95% CI of the mean paired difference.
        seed: seed of the bootstrap.

    Returns:
        ``{"n", "difference": "b - a", "mean_a", "mean_b", "mean_diff", "ci95": [lo, hi], "wilcoxon_p",
        "mannwhitney_p", "n_boot", "seed", "only_a", "only_b", "undefined"}``: ``wilcoxon_p`` is the two-sided
        signed-rank test of the paired differences (1.0 when all are zero), ``mannwhitney_p`` the two-sided
        Mann–Whitney U test of the two samples as unpaired (the test of the Turbolift paper); ``only_a``/
        ``only_b`` list unmatched case ids, ``undefined`` the shared cases left out for a missing value.

    Raises:
        ValueError: when no case id is shared (or no shared case has two defined values).
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError(f"no case in common between the two runs ({len(a)} vs {len(b)} cases)")
    undefined = [c for c in shared if not (_is_defined(a[c]) and _is_defined(b[c]))]
    used = [c for c in shared if c not in set(undefined)]
    if not used:
        raise ValueError(f"none of the {len(shared)} shared cases has a defined value in both runs")
    va = np.array([float(a[c]) for c in used])
    vb = np.array([float(b[c]) for c in used])
    diff = vb - va
    lo, hi = bootstrap_ci(diff, n_boot, seed)
    return {
        "n": len(used),
        "difference": "b - a",
        "mean_a": float(va.mean()),
        "mean_b": float(vb.mean()),
        "mean_diff": float(diff.mean()),
        "ci95": [lo, hi],
        "wilcoxon_p": _wilcoxon_p(diff),
        "mannwhitney_p": _mannwhitney_p(va, vb),
        "n_boot": n_boot,
        "seed": seed,
        "only_a": sorted(set(a) - set(b)),
        "only_b": sorted(set(b) - set(a)),
        "undefined": undefined,
    }


def find_summary(run: str | Path) -> Path:
    """The summary JSON of a run: the file itself, or the CV summary inside a run folder."""
    from medseg.run_dir import RunDir

    path = Path(run)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder or summary file")
    summary = RunDir(path).cv_summary
    if summary.is_file():
        return summary
    raise FileNotFoundError(f"{path}: no {summary.name} in this folder (a CV or Turbolift-stage run has one)")


def _row_value(row: dict[str, Any], metric: str) -> Any:
    if metric in row:
        return row[metric]
    for name in _CASE_METRICS:  # "<class>_<metric>", e.g. "organ_dice" or "2_hd95"
        if metric.endswith(f"_{name}"):
            cls = metric[: -len(name) - 1]
            if cls in row.get("metrics", {}):
                return row["metrics"][cls].get(name)
    raise KeyError(metric)


def load_case_values(run: str | Path, metric: str = "dice_mean") -> dict[str, Any]:
    """``{case: value}`` of ``metric`` from the ``per_case`` rows of a run's summary.

    ``metric`` is a row key (``dice_mean``, ``hd95_mean``, ``nsd_mean``) or ``<class>_<metric>`` (``organ_dice``).
    """
    path = find_summary(run)
    rows = json.loads(path.read_text()).get("per_case")
    if not rows:
        raise ValueError(f"{path}: no per_case rows")
    cases = [str(r["case"]) for r in rows]
    if len(set(cases)) != len(cases):
        raise ValueError(f"{path}: a case appears in more than one per_case row")
    try:
        return {case: _row_value(r, metric) for case, r in zip(cases, rows, strict=True)}
    except KeyError:
        raise ValueError(f"{path}: metric {metric!r} not in its per_case rows") from None


def compare_runs(
    run_a: str | Path, run_b: str | Path, metric: str = "dice_mean", n_boot: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """:func:`compare_cases` on the per-case ``metric`` of two runs, plus ``run_a``, ``run_b`` and ``metric``."""
    a, b = load_case_values(run_a, metric), load_case_values(run_b, metric)
    result = compare_cases(a, b, n_boot=n_boot, seed=seed)
    return {"run_a": str(find_summary(run_a)), "run_b": str(find_summary(run_b)), "metric": metric, **result}
