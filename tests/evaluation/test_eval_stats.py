"""Paired run comparison on constructed per-case values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.evaluation.stats import compare_cases, compare_runs


def _values(n: int = 20, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"case_{i:02d}": float(v) for i, v in enumerate(rng.uniform(0.5, 0.85, n))}


def test_identical_runs() -> None:
    a = _values()
    r = compare_cases(a, dict(a), n_boot=500)
    assert r["n"] == 20 and r["mean_diff"] == 0.0 and r["difference"] == "b - a"
    assert r["wilcoxon_p"] == 1.0 and r["mannwhitney_p"] == 1.0
    assert r["ci95"][0] <= 0.0 <= r["ci95"][1]


def test_consistent_shift_is_significant() -> None:
    a = _values()
    noise = np.random.default_rng(1).normal(0.0, 0.02, len(a))
    b = {c: v + 0.1 + e for (c, v), e in zip(a.items(), noise, strict=True)}
    r = compare_cases(a, b, n_boot=2000, seed=0)
    assert r["mean_diff"] == pytest.approx(0.1 + noise.mean())
    assert r["mean_b"] - r["mean_a"] == pytest.approx(r["mean_diff"])
    assert r["wilcoxon_p"] < 0.05 and r["ci95"][0] > 0.0 and r["ci95"][0] < r["mean_diff"] < r["ci95"][1]
    assert compare_cases(a, b, n_boot=2000, seed=0)["ci95"] == r["ci95"]  # seeded
    reverse = compare_cases(b, a, n_boot=2000, seed=0)
    assert reverse["mean_diff"] == pytest.approx(-r["mean_diff"]) and reverse["ci95"][1] < 0.0


def test_unmatched_undefined_and_no_overlap() -> None:
    a = {"x": 0.5, "y": 0.6, "z": None, "only_a": 0.1}
    b = {"x": 0.7, "y": 0.9, "z": 0.8, "only_b": 0.2}
    r = compare_cases(a, b, n_boot=200)
    assert r["n"] == 2 and r["only_a"] == ["only_a"] and r["only_b"] == ["only_b"] and r["undefined"] == ["z"]
    assert r["mean_diff"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no case in common"):
        compare_cases({"x": 1.0}, {"y": 1.0})


def test_compare_runs_reads_cv_summary(tmp_path) -> None:
    a, b = _values(), _values(seed=5)
    for name, vals in (("run_a", a), ("run_b", b)):
        rows = [{"case": c, "fold": 0, "metrics": {"organ": {"dice": v, "hd95": 1.0}}, "dice_mean": v}
                for c, v in vals.items()]  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "cv_summary.json").write_text(json.dumps({"per_case": rows}))
    r = compare_runs(tmp_path / "run_a", tmp_path / "run_b", n_boot=200)
    assert r["metric"] == "dice_mean" and r["n"] == 20
    assert r["mean_diff"] == pytest.approx(np.mean(list(b.values())) - np.mean(list(a.values())))
    assert compare_runs(tmp_path / "run_a", tmp_path / "run_b", "organ_hd95", n_boot=200)["mean_diff"] == 0.0
    with pytest.raises(ValueError, match="lesion_dice"):
        compare_runs(tmp_path / "run_a", tmp_path / "run_b", "lesion_dice")
    with pytest.raises(FileNotFoundError):
        compare_runs(tmp_path / "run_a", tmp_path / "nope")


def test_ci_is_scipys_bca_bootstrap() -> None:
    """Issue 17, item 11: the CI is ``scipy.stats.bootstrap``'s BCa interval (same resamples, same numbers)."""
    from scipy.stats import bootstrap

    a = _values(15)
    b = {c: v + 0.05 * np.sin(i) for i, (c, v) in enumerate(a.items())}
    r = compare_cases(a, b, n_boot=3000, seed=4)
    diff = np.array([b[c] - a[c] for c in sorted(a)])
    ref = bootstrap((diff,), np.mean, n_resamples=3000, method="BCa", rng=np.random.default_rng(4))
    assert r["ci_method"] == "BCa" and r["ci95"] == pytest.approx(list(ref.confidence_interval))
    assert r["notes"] == []  # 15 cases: nothing to warn about


def test_small_samples_are_flagged() -> None:
    """With 6 cases the smallest possible Wilcoxon p is 2/2^6 = 0.031; with 4 it is 0.125 (cannot show anything)."""
    from medseg.evaluation.stats import wilcoxon_min_p

    assert wilcoxon_min_p(6) == pytest.approx(0.03125) and wilcoxon_min_p(4) == pytest.approx(0.125)
    a = {f"c{i}": 0.5 for i in range(4)}
    b = {f"c{i}": 0.6 + 0.01 * i for i in range(4)}
    r = compare_cases(a, b, n_boot=500)
    assert r["wilcoxon_p"] == pytest.approx(0.125) and r["wilcoxon_min_p"] == pytest.approx(0.125)
    assert any("cannot reach p < 0.05" in n for n in r["notes"]) and any("unreliable" in n for n in r["notes"])
    constant = compare_cases(a, {c: v + 0.1 for c, v in a.items()}, n_boot=500)
    assert constant["ci_method"] == "none" and constant["ci95"] == pytest.approx([0.1, 0.1])
