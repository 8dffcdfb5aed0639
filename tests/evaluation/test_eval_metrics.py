"""Per-case metrics on hand-built volumes with known Dice / HD95 / NSD, and folder evaluation of tiny NIfTI files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg.data.synthetic import save_nifti
from medseg.evaluation.aggregate import case_means
from medseg.evaluation.metrics import case_metrics, evaluate_folder, evaluate_pair, image_diagonal_mm

SPACING = (2.0, 1.0, 0.5)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (outside the image counts as outside)."""
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis)[1:-1, 1:-1, 1:-1]
    return mask & ~interior


def _brute_force(p: np.ndarray, r: np.ndarray, spacing: tuple[float, ...], tol: float) -> tuple[float, float]:
    """HD95 (max of the directed 95th percentiles) and NSD from all pairwise surface-voxel distances."""
    sp = np.argwhere(_surface(p)) * np.asarray(spacing)
    sr = np.argwhere(_surface(r)) * np.asarray(spacing)
    d = np.sqrt(((sp[:, None, :] - sr[None, :, :]) ** 2).sum(-1))
    d_pr, d_rp = d.min(axis=1), d.min(axis=0)
    hd95 = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    nsd = ((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (len(d_pr) + len(d_rp))
    return float(hd95), float(nsd)


def _slabs(axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 2-voxel-thick 5×5 slabs overlapping by one voxel layer along ``axis``: every voxel is on the surface."""
    p = np.zeros((8, 9, 10), np.uint8)
    r = np.zeros_like(p)
    sl_p, sl_r = [slice(2, 7)] * 3, [slice(2, 7)] * 3
    sl_p[axis], sl_r[axis] = slice(2, 4), slice(3, 5)
    p[tuple(sl_p)] = 1
    r[tuple(sl_r)] = 1
    return p, r


@pytest.mark.parametrize("axis", [0, 2])
def test_offset_slabs_by_hand(axis: int) -> None:
    # 50 voxels each, 25 shared: Dice 0.5, IoU 1/3. Half of each surface is at distance 0, half at one voxel step
    # along `axis` (spacing[axis] mm) → q95 = spacing[axis]; NSD = 0.5 below that tolerance, 1.0 at it.
    p, r = _slabs(axis)
    step = SPACING[axis]
    m = case_metrics(p, r, SPACING, [1], nsd_tolerance_mm=step * 0.9)["1"]
    assert m["dice"] == pytest.approx(0.5) and m["iou"] == pytest.approx(1 / 3)
    assert m["hd95"] == pytest.approx(step, rel=1e-5)
    assert m["nsd"] == pytest.approx(0.5)
    assert case_metrics(p, r, SPACING, [1], nsd_tolerance_mm=step)["1"]["nsd"] == pytest.approx(1.0)
    assert (m["tp"], m["fp"], m["fn"]) == (25, 25, 25)
    assert m["vol_pred_ml"] == pytest.approx(50 * 1.0 / 1000) and m["vol_diff_ml"] == pytest.approx(0.0)


def test_single_voxels_by_hand() -> None:
    p = np.zeros((6, 6, 8), np.int64)
    r = np.zeros_like(p)
    p[2, 2, 2], r[2, 2, 5] = 1, 1  # 3 voxels apart along an axis of 2.5 mm → 7.5 mm
    m = case_metrics(p, r, (1.0, 1.0, 2.5), [1], nsd_tolerance_mm=2.0)["1"]
    assert m["hd95"] == pytest.approx(7.5) and m["nsd"] == 0.0 and m["dice"] == 0.0
    assert case_metrics(p, r, (1.0, 1.0, 2.5), [1], nsd_tolerance_mm=7.5)["1"]["nsd"] == pytest.approx(1.0)


def test_offset_cubes_match_formula_and_brute_force() -> None:
    n, k = 6, 2
    p = np.zeros((12, 10, 10), np.uint8)
    r = np.zeros_like(p)
    p[1 : 1 + n, 2 : 2 + n, 2 : 2 + n] = 1
    r[1 + k : 1 + k + n, 2 : 2 + n, 2 : 2 + n] = 1
    m = case_metrics(p, r, SPACING, [1], nsd_tolerance_mm=1.3)["1"]
    assert m["dice"] == pytest.approx((n - k) / n) and m["iou"] == pytest.approx((n - k) / (n + k))
    hd95, nsd = _brute_force(p.astype(bool), r.astype(bool), SPACING, 1.3)
    assert m["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert m["nsd"] == pytest.approx(nsd)
    assert m["vol_diff_ml"] == pytest.approx(0.0) and m["vol_ref_ml"] == pytest.approx(n**3 * 1.0 / 1000)


def test_masks_touching_the_border_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    p = rng.random((5, 6, 7)) > 0.5
    r = rng.random((5, 6, 7)) > 0.4
    m = case_metrics(p.astype(np.uint8), r.astype(np.uint8), SPACING, [1], nsd_tolerance_mm=1.3)["1"]
    hd95, nsd = _brute_force(p, r, SPACING, 1.3)
    assert m["hd95"] == pytest.approx(hd95, rel=1e-5) and m["nsd"] == pytest.approx(nsd)


def test_identical_masks() -> None:
    p, _ = _slabs(1)
    m = case_metrics(p, p.copy(), SPACING, [1])["1"]
    assert (m["dice"], m["iou"], m["hd95"], m["nsd"]) == (1.0, 1.0, 0.0, 1.0)


def test_empty_case_rules() -> None:
    full, _ = _slabs(0)
    empty = np.zeros_like(full)
    both = case_metrics(empty, empty, SPACING, [1])["1"]
    assert (both["dice"], both["iou"], both["nsd"], both["hd95"]) == (None, None, None, None)  # absent: no score
    assert both["absent"] and not both["hd95_worst_case"]
    # one mask empty: HD95 is the image diagonal, (8, 9, 10) voxels of (2, 1, 0.5) mm → sqrt(16² + 9² + 5²) mm
    diagonal = math.sqrt(16**2 + 9**2 + 5**2)
    assert image_diagonal_mm((8, 9, 10), SPACING) == pytest.approx(diagonal)
    for pred, label in ((full, empty), (empty, full)):
        m = case_metrics(pred, label, SPACING, [1])["1"]
        assert (m["dice"], m["iou"], m["nsd"]) == (0.0, 0.0, 0.0) and m["hd95"] == pytest.approx(diagonal)
        assert m["hd95_worst_case"] and not m["absent"]
    m = case_metrics(full, empty, SPACING, [1])["1"]
    assert (m["tp"], m["fp"], m["fn"]) == (0, 50, 0) and m["vol_diff_ml"] == pytest.approx(0.05)
    assert not case_metrics(full, full, SPACING, [1])["1"]["hd95_worst_case"]


def test_absent_class_is_excluded_from_the_case_mean() -> None:
    """Issue 17, item 9: organ Dice 0.7 and a lesion absent from both masks → the case's Dice is 0.7, not 0.85."""
    label = np.zeros((10, 10, 10), np.uint8)
    label[0:5, 0:2, 0:10] = 1  # 100 voxels
    pred = np.zeros_like(label)
    pred[0:5, 0:2, 0:7] = 1  # 70 voxels inside → Dice 140 / 170
    pred[0:5, 2:4, 0:3] = 1  # 30 voxels outside → Dice 2·70 / (100 + 100) = 0.7
    metrics = case_metrics(pred, label, (1.0, 1.0, 1.0), {1: "organ", 2: "lesion"})
    assert metrics["organ"]["dice"] == pytest.approx(0.7) and metrics["lesion"]["dice"] is None
    assert case_means(metrics)["dice_mean"] == pytest.approx(0.7)


def test_named_classes_and_errors() -> None:
    p, r = _slabs(0)
    m = case_metrics(p * 2, r * 2, SPACING, {"0": "background", "1": "organ", "2": "lesion"})
    assert list(m) == ["organ", "lesion"] and m["organ"]["hd95"] is None and m["lesion"]["dice"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"\(8, 9, 10\).*\(8, 9, 9\)"):
        case_metrics(p, r[:, :, :9], SPACING, [1])
    with pytest.raises(ValueError, match="integer"):
        case_metrics(p * 0.5, r, SPACING, [1])
    with pytest.raises(ValueError, match="background"):
        case_metrics(p, r, SPACING, [0, 1])


def _affine() -> np.ndarray:
    return np.array([[-2.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 0.5, 5], [0, 0, 0, 1]])


def test_evaluate_folder(tmp_path) -> None:
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    pred_dir.mkdir()
    label_dir.mkdir()
    p, r = _slabs(0)
    save_nifti(pred_dir / "a.nii.gz", p, _affine())
    save_nifti(label_dir / "a.nii", r, _affine())
    save_nifti(pred_dir / "b.nii.gz", p * 2, _affine())  # class 2 here, class 1 only in case a
    save_nifti(label_dir / "b.nii.gz", p * 2, _affine())
    save_nifti(pred_dir / "extra.nii.gz", p, _affine())
    out = evaluate_folder(pred_dir, label_dir)
    assert out["classes"] == ["1", "2"] and out["unmatched"] == {"pred_only": ["extra"], "label_only": []}
    a, b = out["per_case"]
    assert a["case"] == "a" and a["metrics"]["1"]["hd95"] == pytest.approx(2.0)  # spacing from the affine
    assert a["metrics"]["2"]["dice"] is None and a["metrics"]["2"]["absent"]  # absent from both files: no score
    assert a["dice_mean"] == pytest.approx(0.5)  # class 1 only (was (0.5 + 1) / 2 when absent counted as 1)
    assert b["metrics"]["1"]["dice"] is None and b["metrics"]["2"]["dice"] == 1.0 and b["dice_mean"] == 1.0
    assert out["summary"]["dice_case_mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["summary"]["absent_in_both"] == 2 and out["missing_predictions"] == []
    only_two = evaluate_folder(pred_dir, label_dir, classes=[2])
    assert only_two["classes"] == ["2"]


def test_missing_prediction_is_a_failure_unless_skipped(tmp_path) -> None:
    """Issue 17, item 8: a labelled case without a prediction scores Dice 0 and the worst-case HD95."""
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    pred_dir.mkdir()
    label_dir.mkdir()
    p, r = _slabs(0)
    save_nifti(pred_dir / "a.nii.gz", r, _affine())  # perfect
    save_nifti(label_dir / "a.nii.gz", r, _affine())
    save_nifti(label_dir / "b.nii.gz", r, _affine())  # no prediction
    out = evaluate_folder(pred_dir, label_dir)
    a, b = out["per_case"]
    assert (a["dice_mean"], b["dice_mean"]) == (1.0, 0.0) and b["missing_prediction"] and "missing_prediction" not in a
    assert b["metrics"]["1"]["hd95"] == pytest.approx(math.sqrt(16**2 + 9**2 + 5**2))  # (8,9,10) × (2,1,0.5) mm
    assert out["missing_predictions"] == ["b"] and out["summary"]["missing_predictions"] == ["b"]
    assert out["summary"]["dice_case_mean"] == pytest.approx(0.5) and out["summary"]["hd95_worst_case"] == 1
    skipped = evaluate_folder(pred_dir, label_dir, skip_missing=True)
    assert [r["case"] for r in skipped["per_case"]] == ["a"] and skipped["summary"]["dice_case_mean"] == 1.0
    assert skipped["missing_predictions"] == ["b"] and "skipped" in skipped["missing_policy"]


def test_class_names_from_dataset_json(tmp_path) -> None:
    """Issue 17, item 10: classes are named as in the dataset.json beside the labels (MSD / nnU-Net layout)."""
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "task" / "labelsTr"
    pred_dir.mkdir()
    label_dir.mkdir(parents=True)
    p, r = _slabs(0)
    save_nifti(pred_dir / "a.nii.gz", p + p * (np.roll(p, 1, 0)), _affine())
    save_nifti(label_dir / "a.nii.gz", r * 2, _affine())
    (tmp_path / "task" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "lesion": 2}}))
    out = evaluate_folder(pred_dir, label_dir)
    assert out["classes"] == ["organ", "lesion"] and set(out["per_case"][0]["metrics"]) == {"organ", "lesion"}
    assert evaluate_folder(pred_dir, label_dir, classes=[2])["classes"] == ["lesion"]
    assert evaluate_folder(pred_dir, label_dir, names={1: "a", 2: "b"})["classes"] == ["a", "b"]
    # the names reach `medseg compare --metric lesion_dice` (it failed on "1"/"2" before)
    from medseg.evaluation.stats import compare_runs

    (tmp_path / "a.json").write_text(json.dumps(out))
    (tmp_path / "b.json").write_text(json.dumps(out))
    assert compare_runs(tmp_path / "a.json", tmp_path / "b.json", "lesion_dice", n_boot=100)["mean_diff"] == 0.0


def test_itk_label_matches_nifti_prediction(tmp_path) -> None:
    import SimpleITK as sitk

    p, r = _slabs(2)
    save_nifti(tmp_path / "pred.nii.gz", p, _affine())
    img = sitk.GetImageFromArray(r.transpose(2, 1, 0))  # sitk arrays are (z, y, x)
    img.SetSpacing((2.0, 1.0, 0.5))
    img.SetOrigin((-10.0, -20.0, 5.0))  # LPS of the NIfTI's RAS origin (10, 20, 5) with flipped x, y axes
    sitk.WriteImage(img, str(tmp_path / "label.mha"))
    m = evaluate_pair(tmp_path / "pred.nii.gz", tmp_path / "label.mha")
    assert m["1"]["hd95"] == pytest.approx(0.5) and m["1"]["dice"] == pytest.approx(0.5)


def test_evaluate_folder_errors(tmp_path) -> None:
    pred_dir, label_dir = tmp_path / "pred", tmp_path / "labels"
    pred_dir.mkdir()
    label_dir.mkdir()
    p, r = _slabs(0)
    save_nifti(pred_dir / "a.nii.gz", p, _affine())
    shifted = _affine()
    shifted[0, 3] += 1.0
    save_nifti(label_dir / "a.nii.gz", r, shifted)
    with pytest.raises(ValueError, match=r"geometry mismatch.*pred.a\.nii\.gz.*labels.a\.nii\.gz"):
        evaluate_folder(pred_dir, label_dir)
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate_folder(tmp_path / "missing", label_dir)
    (label_dir / "a.nii.gz").rename(label_dir / "other.nii.gz")
    with pytest.raises(ValueError, match="no case is in both"):
        evaluate_folder(pred_dir, label_dir)
