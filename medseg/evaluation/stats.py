"""Paired comparison of two runs on the same cases: bootstrap CI, Wilcoxon signed-rank and Mann–Whitney U tests.

Differences are always ``b - a`` (run B minus run A): a positive ``mean_diff`` means B scores higher, which is
better for Dice/NSD and worse for HD95. The CI of the mean difference is ``scipy.stats.bootstrap``'s BCa interval
(percentile when BCa cannot be computed); with fewer than :data:`RELIABLE_N` cases it is flagged unreliable, and a
Wilcoxon test whose smallest attainable p-value exceeds 0.05 is flagged as unable to show anything
(docs/evaluation.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

_CASE_METRICS = ("dice", "iou", "hd95", "nsd", "vol_pred_ml", "vol_ref_ml", "vol_diff_ml", "tp", "fp", "fn")
RELIABLE_N = 10  # fewer paired cases than this: a bootstrap CI is too narrow to trust (docs/evaluation.md)


def _is_defined(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def bootstrap_ci(
    diff: np.ndarray, n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[tuple[float, float], str]:
    """``((lo, hi), method)``: the bootstrap CI of the mean of ``diff`` by ``scipy.stats.bootstrap``.

    BCa (bias-corrected and accelerated) when it can be computed; the percentile interval when BCa is undefined
    (e.g. a jackknife without spread); ``[d, d]`` with method ``none`` for a single case or identical differences.
    """
    import warnings

    from scipy.stats import bootstrap

    diff = np.asarray(diff, dtype=float)
    if len(diff) < 2 or np.all(diff == diff[0]):
        return (float(diff.mean()), float(diff.mean())), "none"
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns (and returns NaN) when BCa is degenerate: we fall back
            res = bootstrap(
                (diff,),
                np.mean,
                n_resamples=n_boot,
                confidence_level=level,
                method=method,
                rng=np.random.default_rng(seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return (lo, hi), method
    return (float(diff.mean()), float(diff.mean())), "none"


def wilcoxon_min_p(n: int) -> float:
    """The smallest two-sided p-value the exact Wilcoxon signed-rank test can give with ``n`` pairs: ``2 / 2**n``
    (all differences of one sign). Above 0.05 the test cannot show a difference whatever the data."""
    return min(1.0, 2.0 ** (1 - n)) if n > 0 else 1.0


def reliability_notes(n: int) -> list[str]:
    """Warnings that go with a paired comparison of ``n`` cases (empty when none applies)."""
    notes = []
    min_p = wilcoxon_min_p(n)
    if min_p > 0.05:
        notes.append(
            f"with {n} paired cases the Wilcoxon test cannot reach p < 0.05 (smallest possible p {min_p:.3g}): "
            "its p-value means nothing"
        )
    if n < RELIABLE_N:
        notes.append(f"with fewer than {RELIABLE_N} cases ({n}) the bootstrap CI is unreliable (too narrow)")
    return notes


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
        ``{"n", "difference": "b - a", "mean_a", "mean_b", "mean_diff", "ci95": [lo, hi], "ci_method",
        "wilcoxon_p", "wilcoxon_min_p", "mannwhitney_p", "notes", "n_boot", "seed", "only_a", "only_b",
        "undefined"}``: ``ci95`` is the bootstrap CI of the mean difference (``ci_method`` BCa, percentile or
        none), ``wilcoxon_p`` the two-sided signed-rank test of the paired differences (1.0 when all are zero),
        ``wilcoxon_min_p`` the smallest p it could give with ``n`` pairs, ``mannwhitney_p`` the two-sided
        Mann–Whitney U test of the two samples as unpaired (the test of the Turbolift paper), ``notes`` the
        :func:`reliability_notes`; ``only_a``/``only_b`` list unmatched case ids, ``undefined`` the shared cases
        left out for a missing value.

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
    (lo, hi), method = bootstrap_ci(diff, n_boot, seed)
    return {
        "n": len(used),
        "difference": "b - a",
        "mean_a": float(va.mean()),
        "mean_b": float(vb.mean()),
        "mean_diff": float(diff.mean()),
        "ci95": [lo, hi],
        "ci_method": method,
        "wilcoxon_p": _wilcoxon_p(diff),
        "wilcoxon_min_p": wilcoxon_min_p(len(used)),
        "mannwhitney_p": _mannwhitney_p(va, vb),
        "notes": reliability_notes(len(used)),
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


def _worst_case(row: dict[str, Any], metric: str) -> bool:
    """Whether ``metric`` of this row rests on a worst-case HD95 (one of the masks empty)."""
    metrics = row.get("metrics", {})
    if metric == "hd95_mean":
        return any(m.get("hd95_worst_case") for m in metrics.values())
    if metric.endswith("_hd95"):
        return bool(metrics.get(metric[: -len("_hd95")], {}).get("hd95_worst_case"))
    return False


def _load_rows(run: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    path = find_summary(run)
    rows = json.loads(path.read_text()).get("per_case")
    if not rows:
        raise ValueError(f"{path}: no per_case rows")
    cases = [str(r["case"]) for r in rows]
    if len(set(cases)) != len(cases):
        raise ValueError(f"{path}: a case appears in more than one per_case row")
    return path, rows


def load_case_values(run: str | Path, metric: str = "dice_mean") -> dict[str, Any]:
    """``{case: value}`` of ``metric`` from the ``per_case`` rows of a run's summary.

    ``metric`` is a row key (``dice_mean``, ``hd95_mean``, ``nsd_mean``) or ``<class>_<metric>`` (``organ_dice``,
    with the class names of the run's dataset).
    """
    path, rows = _load_rows(run)
    try:
        return {str(r["case"]): _row_value(r, metric) for r in rows}
    except KeyError:
        classes = sorted({c for r in rows for c in r.get("metrics", {})})
        raise ValueError(f"{path}: metric {metric!r} not in its per_case rows (classes: {classes})") from None


def worst_case_cases(run: str | Path, metric: str) -> list[str]:
    """The cases whose ``metric`` includes a worst-case HD95 (empty for metrics other than HD95)."""
    return sorted(str(r["case"]) for r in _load_rows(run)[1] if _worst_case(r, metric))


def compare_runs(
    run_a: str | Path, run_b: str | Path, metric: str = "dice_mean", n_boot: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """:func:`compare_cases` on the per-case ``metric`` of two runs, plus ``run_a``, ``run_b`` and ``metric``."""
    a, b = load_case_values(run_a, metric), load_case_values(run_b, metric)
    result = compare_cases(a, b, n_boot=n_boot, seed=seed)
    worst = {"worst_case_a": worst_case_cases(run_a, metric), "worst_case_b": worst_case_cases(run_b, metric)}
    return {"run_a": str(find_summary(run_a)), "run_b": str(find_summary(run_b)), "metric": metric, **result, **worst}
