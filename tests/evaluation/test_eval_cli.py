"""``medseg evaluate`` and ``medseg compare`` as subprocesses on tiny fake inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from medseg.data.synthetic import save_nifti


def _medseg(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medseg.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_evaluate_command(tmp_path) -> None:
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    pred_dir.mkdir()
    label_dir.mkdir()
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    label = np.zeros((8, 8, 6), np.uint8)
    label[2:6, 2:6, 1:4] = 1
    pred = np.roll(label, 1, axis=0)
    for case in ("a", "b"):
        save_nifti(pred_dir / f"{case}.nii.gz", pred, affine)
        save_nifti(label_dir / f"{case}.nii.gz", label, affine)
    out = tmp_path / "report" / "eval.json"
    proc = _medseg("evaluate", "-p", pred_dir, "-l", label_dir, "-o", out, "--classes", "1", "--nsd-tolerance", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [r["case"] for r in result["per_case"]] == ["a", "b"] and result["classes"] == ["1"]
    assert result["per_case"][0]["metrics"]["1"]["dice"] == 0.75 and result["nsd_tolerance_mm"] == 1.0
    assert result["summary"]["dice_case_mean"] == 0.75
    assert out.with_suffix(".csv").read_text().startswith("case,fold,dice_mean,1_dice,1_hd95")
    assert "medseg evaluate" in proc.stdout and "0 labelled cases without a prediction" in proc.stdout
    assert result["missing_predictions"] == []

    # a labelled case without a prediction is a failure (Dice 0) and is counted; --skip-missing leaves it out
    save_nifti(label_dir / "c.nii.gz", label, affine)
    proc = _medseg("evaluate", "-p", pred_dir, "-l", label_dir, "-o", out, "--classes", "1")
    assert proc.returncode == 0, proc.stderr
    assert "1 labelled case(s) without a prediction, scored as failures" in proc.stdout
    result = json.loads(out.read_text())
    assert result["summary"]["dice_case_mean"] == 0.5 and result["missing_predictions"] == ["c"]
    proc = _medseg("evaluate", "-p", pred_dir, "-l", label_dir, "-o", out, "--classes", "1", "--skip-missing")
    assert json.loads(out.read_text())["summary"]["dice_case_mean"] == 0.75 and "left out" in proc.stdout
    (label_dir / "c.nii.gz").unlink()

    missing = _medseg("evaluate", "-p", tmp_path / "nope", "-l", label_dir)
    assert missing.returncode == 1 and "no such folder" in missing.stderr
    (label_dir / "a.nii.gz").rename(label_dir / "x.nii.gz")
    (label_dir / "b.nii.gz").rename(label_dir / "y.nii.gz")
    unmatched = _medseg("evaluate", "-p", pred_dir, "-l", label_dir)
    assert unmatched.returncode == 1 and "no case is in both" in unmatched.stderr


def _fake_run(path: Path, dice: dict[str, float]) -> Path:
    rows = [{"case": c, "fold": i % 2, "metrics": {"organ": {"dice": v}}, "dice_mean": v}
            for i, (c, v) in enumerate(dice.items())]  # fmt: skip
    path.mkdir()
    (path / "cv_summary.json").write_text(json.dumps({"n_cases": len(rows), "per_case": rows}))
    return path


def test_compare_command(tmp_path) -> None:
    a = {f"c{i}": 0.6 + 0.01 * i for i in range(12)}
    run_a = _fake_run(tmp_path / "A", a)
    run_b = _fake_run(tmp_path / "B", {c: v + 0.1 for c, v in a.items()})
    out = tmp_path / "compare.json"
    proc = _medseg("compare", run_a, run_b, "--metric", "dice_mean", "-o", out, "--n-boot", "500")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    expected = {"run_a", "run_b", "metric", "n", "difference", "mean_a", "mean_b", "mean_diff", "ci95", "ci_method",
                "wilcoxon_p", "wilcoxon_min_p", "mannwhitney_p", "notes", "n_boot", "seed", "only_a", "only_b",
                "undefined", "worst_case_a", "worst_case_b"}  # fmt: skip
    assert set(result) == expected
    assert result["n"] == 12 and abs(result["mean_diff"] - 0.1) < 1e-9 and result["wilcoxon_p"] < 0.05
    assert "Wilcoxon" in proc.stdout

    missing = _medseg("compare", run_a, tmp_path / "nope")
    assert missing.returncode == 1 and "no such run folder" in missing.stderr
