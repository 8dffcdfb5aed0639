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
