"""Aggregation of fold outputs into a cv_summary (means/stds checked by hand), per-case CSV, plot and report."""

from __future__ import annotations

import csv
import math

import pytest

from medseg.evaluation.aggregate import aggregate_cv, summarize_cases, write_per_case_csv
from medseg.evaluation.report import write_report_md
from medseg.viz import plot_per_case_dice


def _m(dice: float | None, hd95: float | None, nsd: float | None, worst: bool = False) -> dict:
    iou = None if dice is None else dice / (2 - dice)
    return {"dice": dice, "iou": iou, "hd95": hd95, "nsd": nsd, "vol_diff_ml": 0.5, "hd95_worst_case": worst}


def _folds() -> list[dict]:
    # case Dice means: a 0.4, b 0.9 (fold 0), c 0.4 (fold 1); HD95 means: a 11.0 (lesion at the worst case 20 mm),
    # b 2.0, c 5.0
    return [
        {"fold": 1, "per_case": [
            {"case": "c", "metrics": {"organ": _m(0.5, 4.0, 0.6), "lesion": _m(0.3, 6.0, 0.2)}, "dice_mean": 0.4},
        ]},
        {"fold": 0, "run_dir": "fold_0", "per_case": [
            {"case": "a", "metrics": {"organ": _m(0.8, 2.0, 0.9), "lesion": _m(0.0, 20.0, 0.0, worst=True)},
             "dice_mean": 0.4},
            {"case": "b", "metrics": {"organ": _m(1.0, 1.0, 1.0), "lesion": _m(0.8, 3.0, 0.7)}},
        ]},
    ]  # fmt: skip


def test_aggregate_cv_by_hand() -> None:
    s = aggregate_cv(_folds())
    assert (s["n_folds"], s["n_cases"], s["classes"]) == (2, 3, ["organ", "lesion"])
    f0, f1 = s["folds"]
    assert (f0["fold"], f0["n_cases"], f0["run_dir"]) == (0, 2, "fold_0")
    assert f0["dice_mean"] == pytest.approx(0.65) and f1["dice_mean"] == pytest.approx(0.4)
    assert f0["dice_per_class"] == pytest.approx({"organ": 0.9, "lesion": 0.4})
    assert f0["hd95_mean"] == pytest.approx(6.5) and f1["hd95_mean"] == pytest.approx(5.0)
    # over folds: mean/sample std of (0.65, 0.4) and (6.5, 5.0)
    assert s["dice_mean"] == pytest.approx(0.525) and s["dice_std"] == pytest.approx(0.25 / math.sqrt(2))
    assert s["hd95_mean"] == pytest.approx(5.75) and s["hd95_std"] == pytest.approx(1.5 / math.sqrt(2))
    # over cases: (0.4, 0.9, 0.4) → mean 17/30, sample var 1/12; (11, 2, 5) → mean 6, sample var 21
    assert s["dice_case_mean"] == pytest.approx(17 / 30) and s["dice_case_std"] == pytest.approx(math.sqrt(1 / 12))
    assert s["hd95_case_mean"] == pytest.approx(6.0) and s["hd95_case_std"] == pytest.approx(math.sqrt(21.0))
    assert s["nsd_case_mean"] == pytest.approx((0.45 + 0.85 + 0.4) / 3)
    assert s["hd95_worst_case"] == 1 and s["absent_in_both"] == 0 and s["cases_without_foreground"] == []
    assert s["per_class"]["lesion"]["hd95"] == pytest.approx(
        {"mean": 29 / 3, "std": math.sqrt(((20 - 29 / 3) ** 2 + (3 - 29 / 3) ** 2 + (6 - 29 / 3) ** 2) / 2),
         "median": 6.0, "n": 3, "n_undefined": 0, "n_worst_case": 1}
    )  # fmt: skip
    assert [(r["case"], r["fold"]) for r in s["per_case"]] == [("a", 0), ("b", 0), ("c", 1)]
    assert s["per_case"][1]["dice_mean"] == pytest.approx(0.9)  # filled in from its metrics


def test_single_fold_and_single_case_std_is_zero() -> None:
    s = aggregate_cv([_folds()[0]])
    assert s["dice_std"] == 0.0 and s["dice_case_std"] == 0.0 and s["dice_mean"] == pytest.approx(0.4)


def test_summarize_cases_absent_classes_are_excluded_and_counted() -> None:
    rows = [
        {"case": "x", "metrics": {"organ": _m(0.7, 3.0, 0.5), "lesion": _m(None, None, None)}},
        {"case": "y", "metrics": {"organ": _m(None, None, None), "lesion": _m(None, None, None)}},
    ]
    s = summarize_cases(rows)
    assert s["dice_case_mean"] == pytest.approx(0.7) and s["hd95_case_mean"] == pytest.approx(3.0)
    assert s["absent_in_both"] == 3 and s["cases_without_foreground"] == ["y"]
    assert s["per_class"]["lesion"]["dice"]["mean"] is None and s["per_class"]["lesion"]["dice"]["n_undefined"] == 2


def test_csv_plot_report(tmp_path) -> None:
    s = aggregate_cv(_folds())
    path = write_per_case_csv(s, tmp_path / "per_case.csv")
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["case", "fold", "dice_mean", "organ_dice", "organ_hd95", "organ_nsd", "organ_vol_diff_ml",
                       "lesion_dice", "lesion_hd95", "lesion_nsd", "lesion_vol_diff_ml"]  # fmt: skip
    assert rows[1][:3] == ["a", "0", "0.4"] and rows[1][8] == "20.0"  # the worst-case HD95 is a value
    png = plot_per_case_dice(s, tmp_path / "per_case_dice.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = write_report_md(s, tmp_path / "report.md", title="CV test").read_text()
    assert md.startswith("# CV test") and "| 0 | 2 | 0.650 |" in md and "0.525 ± 0.177" in md
    assert "Worst 3 cases" in md and "| c | 1 | 0.400 |" in md and "worst-case value for 1 (case, class)" in md
    assert "0 case(s) had no prediction" in md
