"""Aggregation of fold outputs into a cv_summary (means/stds checked by hand), per-case CSV, plot and report."""

from __future__ import annotations

import csv
import math

import pytest

from medseg.evaluation.aggregate import aggregate_cv, summarize_cases, write_per_case_csv
from medseg.evaluation.report import write_report_md
from medseg.viz import plot_per_case_dice


def _m(dice: float, hd95: float | None, nsd: float) -> dict:
    return {"dice": dice, "iou": dice / (2 - dice), "hd95": hd95, "nsd": nsd, "vol_diff_ml": 0.5}


def _folds() -> list[dict]:
    # case Dice means: a 0.7, b 0.9 (fold 0), c 0.4 (fold 1); HD95 means: a 2.0 (lesion undefined), b 2.0, c 5.0
    return [
        {"fold": 1, "per_case": [
            {"case": "c", "metrics": {"organ": _m(0.5, 4.0, 0.6), "lesion": _m(0.3, 6.0, 0.2)}, "dice_mean": 0.4},
        ]},
        {"fold": 0, "run_dir": "fold_0", "per_case": [
            {"case": "a", "metrics": {"organ": _m(0.8, 2.0, 0.9), "lesion": _m(0.6, None, 0.5)}, "dice_mean": 0.7},
            {"case": "b", "metrics": {"organ": _m(1.0, 1.0, 1.0), "lesion": _m(0.8, 3.0, 0.7)}},
        ]},
    ]  # fmt: skip


def test_aggregate_cv_by_hand() -> None:
    s = aggregate_cv(_folds())
    assert (s["n_folds"], s["n_cases"], s["classes"]) == (2, 3, ["organ", "lesion"])
    f0, f1 = s["folds"]
    assert (f0["fold"], f0["n_cases"], f0["run_dir"]) == (0, 2, "fold_0")
    assert f0["dice_mean"] == pytest.approx(0.8) and f1["dice_mean"] == pytest.approx(0.4)
    assert f0["dice_per_class"] == pytest.approx({"organ": 0.9, "lesion": 0.7})
    assert f0["hd95_mean"] == pytest.approx(2.0) and f1["hd95_mean"] == pytest.approx(5.0)
    # over folds: mean/sample std of (0.8, 0.4) and (2.0, 5.0)
    assert s["dice_mean"] == pytest.approx(0.6) and s["dice_std"] == pytest.approx(math.sqrt(0.08))
    assert s["hd95_mean"] == pytest.approx(3.5) and s["hd95_std"] == pytest.approx(math.sqrt(4.5))
    # over cases: (0.7, 0.9, 0.4) → mean 2/3, sample var 0.19/3; (2, 2, 5) → mean 3, sample var 3
    assert s["dice_case_mean"] == pytest.approx(2 / 3) and s["dice_case_std"] == pytest.approx(math.sqrt(0.19 / 3))
    assert s["hd95_case_mean"] == pytest.approx(3.0) and s["hd95_case_std"] == pytest.approx(math.sqrt(3.0))
    assert s["nsd_case_mean"] == pytest.approx((0.7 + 0.85 + 0.4) / 3)
    assert s["hd95_undefined"] == 1
    assert s["per_class"]["lesion"]["hd95"] == pytest.approx(
        {"mean": 4.5, "std": math.sqrt(4.5), "median": 4.5, "n": 2, "n_undefined": 1}
    )
    assert [(r["case"], r["fold"]) for r in s["per_case"]] == [("a", 0), ("b", 0), ("c", 1)]
    assert s["per_case"][1]["dice_mean"] == pytest.approx(0.9)  # filled in from its metrics


def test_single_fold_and_single_case_std_is_zero() -> None:
    s = aggregate_cv([_folds()[0]])
    assert s["dice_std"] == 0.0 and s["dice_case_std"] == 0.0 and s["dice_mean"] == pytest.approx(0.4)


def test_summarize_cases_undefined_only() -> None:
    rows = [{"case": "x", "metrics": {"1": {"dice": 0.0, "hd95": None, "nsd": 0.0}}}]
    s = summarize_cases(rows)
    assert s["hd95_case_mean"] is None and s["hd95_undefined"] == 1 and s["dice_case_mean"] == 0.0


def test_csv_plot_report(tmp_path) -> None:
    s = aggregate_cv(_folds())
    path = write_per_case_csv(s, tmp_path / "per_case.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["case", "fold", "dice_mean", "organ_dice", "organ_hd95", "organ_nsd", "organ_vol_diff_ml",
                       "lesion_dice", "lesion_hd95", "lesion_nsd", "lesion_vol_diff_ml"]  # fmt: skip
    assert rows[1][:3] == ["a", "0", "0.7"] and rows[1][8] == ""  # undefined HD95 → empty cell
    png = plot_per_case_dice(s, tmp_path / "per_case_dice.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = write_report_md(s, tmp_path / "report.md", title="CV test").read_text()
    assert md.startswith("# CV test") and "| 0 | 2 | 0.800 |" in md and "0.600 ± 0.283" in md
    assert "Worst 3 cases" in md and "| c | 1 | 0.400 |" in md and "undefined for 1 (case, class)" in md
