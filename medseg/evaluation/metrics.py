"""Per-case segmentation metrics: Dice, IoU, HD95, NSD, volumes and voxel counts for each foreground class.

Definitions, per class ``c`` with masks ``P = pred == c`` and ``R = label == c``:

- ``dice = 2|P∩R| / (|P| + |R|)``, ``iou = |P∩R| / |P∪R|``; ``tp``, ``fp``, ``fn`` are voxel counts.
- Surfaces ``∂P``, ``∂R`` are the mask voxels with a face neighbour outside the mask (MONAI: mask XOR its binary
  erosion; outside the image counts as background). Distances are Euclidean between voxel centres, in mm, using the
  voxel spacing (anisotropy included), computed by MONAI.
- ``hd95 = max(q95(d(∂P→∂R)), q95(d(∂R→∂P)))``, the larger of the two directed 95th percentiles (linear
  interpolation), exactly ``monai.metrics.compute_hausdorff_distance(percentile=95)``. Tools that take the 95th
  percentile of the pooled distances (medpy) can report slightly different values.
- ``nsd = (#{∂P within τ of ∂R} + #{∂R within τ of ∂P}) / (#∂P + #∂R)`` with ``τ = nsd_tolerance_mm``: the
  normalised surface Dice, exactly ``monai.metrics.compute_surface_dice`` (voxel-count version, no sub-voxel areas).
- ``vol_pred_ml``, ``vol_ref_ml`` = voxel count × voxel volume / 1000; ``vol_diff_ml = vol_pred_ml - vol_ref_ml``.

Empty masks are defined explicitly (MONAI returns NaN for all of them; docs/evaluation.md states every rule):

==================================  ======  =====  =====  =====================================
case                                dice    iou    nsd    hd95
==================================  ======  =====  =====  =====================================
reference and prediction empty      None    None   None   None (the class is *absent*: excluded)
only one of them empty              0.0     0.0    0.0    the image diagonal in mm (worst case)
==================================  ======  =====  =====  =====================================

A class absent from both masks has no score: it is left out of the case's mean over classes and of every statistic,
and counted (``absent``; the aggregates' ``absent_in_both``). It is *not* a perfect 1.0 (which would reward a class
that was never there) — the same rule as the validation Dice that selects checkpoints
(:func:`medseg.training.module.dice_per_class`). When only one mask is empty the HD95 does not exist; it is set to
the worst possible value, the diagonal of the image in mm (Metrics Reloaded's recommendation), so a missed or
hallucinated structure is penalised in every mean and paired test; ``hd95_worst_case`` flags it and the aggregates
count it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import is_image_file, read_volume, strip_suffix

ClassSpec = Sequence[int] | Mapping[Any, str]
CaseMetrics = dict[str, dict[str, Any]]


def class_names(classes: ClassSpec) -> dict[int, str]:
    """``{label value: class name}`` from a list of values (named ``"1"``, ``"2"``, ...) or a ``{value: name}`` map.

    A map may contain the background (value 0, as in ``dataset.json`` labels); it is dropped. A list may not.
    """
    if isinstance(classes, Mapping):
        return {int(k): str(v) for k, v in classes.items() if int(k) != 0}
    values = [int(c) for c in classes]
    if 0 in values:
        raise ValueError("class 0 is the background; list foreground label values only")
    return {v: str(v) for v in values}


def case_metrics(
    pred: Any, label: Any, spacing: Sequence[float], classes: ClassSpec, nsd_tolerance_mm: float = 2.0
) -> CaseMetrics:
    """Metrics of one case for each foreground class (definitions and empty-mask rules in the module docstring).

    Args:
        pred: predicted label map (integer values; 2D or 3D).
        label: reference label map of the same shape.
        spacing: voxel size in mm along each array axis.
        classes: foreground label values, or a ``{value: name}`` map.
        nsd_tolerance_mm: tolerance τ of the normalised surface Dice.

    Returns:
        ``{class name: {dice, iou, hd95, nsd, vol_pred_ml, vol_ref_ml, vol_diff_ml, tp, fp, fn}}``.

    Raises:
        ValueError: on different shapes, a spacing of the wrong length, or non-integer label values.
    """
    pred_arr, label_arr = _as_labels(pred, "pred"), _as_labels(label, "label")
    if pred_arr.shape != label_arr.shape:
        raise ValueError(f"prediction shape {pred_arr.shape} differs from label shape {label_arr.shape}")
    if pred_arr.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D label map, got shape {pred_arr.shape}")
    spacing_t = tuple(float(s) for s in spacing)
    if len(spacing_t) != pred_arr.ndim or min(spacing_t) <= 0:
        raise ValueError(f"spacing {spacing_t} does not fit shape {pred_arr.shape} (one positive value per axis)")
    if nsd_tolerance_mm < 0:
        raise ValueError(f"nsd_tolerance_mm must be >= 0, got {nsd_tolerance_mm}")
    voxel_ml = float(np.prod(spacing_t)) / 1000.0
    worst = image_diagonal_mm(label_arr.shape, spacing_t)
    return {
        name: _class_metrics(pred_arr == value, label_arr == value, spacing_t, voxel_ml, nsd_tolerance_mm, worst)
        for value, name in class_names(classes).items()
    }


def _as_labels(arr: Any, what: str) -> np.ndarray:
    a = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: {int(a.size - np.isfinite(a).sum())} NaN/Inf voxels in a label map")
        if not np.array_equal(a, np.rint(a)):
            raise ValueError(f"{what}: label maps must hold integer values (got non-integer floats)")
        return a.astype(np.int32)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: label maps must be integer arrays, got dtype {a.dtype}")
    return a


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The worst-case HD95: the diagonal of the image's extent in mm, ``sqrt(sum((n_i * s_i)^2))``.

    No two voxel centres of the image are farther apart, so it bounds every real HD95 of that image.
    """
    return float(np.sqrt(sum((int(n) * float(s)) ** 2 for n, s in zip(shape, spacing, strict=True))))


def absent_class_metrics() -> dict[str, Any]:
    """Metrics of a class absent from both the prediction and the reference: no score (excluded), zero volumes."""
    return {
        "dice": None,
        "iou": None,
        "hd95": None,
        "nsd": None,
        "vol_pred_ml": 0.0,
        "vol_ref_ml": 0.0,
        "vol_diff_ml": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "absent": True,
        "hd95_worst_case": False,
    }


def dice_or_none(tp: int, n_pred: int, n_ref: int) -> float | None:
    """``2 tp / (n_pred + n_ref)``; ``None`` (excluded) when the class is absent from both masks."""
    return None if n_pred + n_ref == 0 else 2.0 * tp / (n_pred + n_ref)


def _class_metrics(
    p: np.ndarray, r: np.ndarray, spacing: tuple[float, ...], voxel_ml: float, tol: float, worst_hd95: float
) -> dict[str, Any]:
    n_p, n_r = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    if n_p == 0 and n_r == 0:
        return absent_class_metrics()
    tp = int(np.count_nonzero(p & r))
    out: dict[str, Any] = {"dice": dice_or_none(tp, n_p, n_r), "iou": tp / (n_p + n_r - tp)}
    if n_p == 0 or n_r == 0:
        out.update(hd95=worst_hd95, nsd=0.0)
    else:
        out["hd95"], out["nsd"] = _surface_metrics(p, r, spacing, tol)
    out.update(
        vol_pred_ml=n_p * voxel_ml,
        vol_ref_ml=n_r * voxel_ml,
        vol_diff_ml=(n_p - n_r) * voxel_ml,
        tp=tp,
        fp=n_p - tp,
        fn=n_r - tp,
        absent=False,
        hd95_worst_case=n_p == 0 or n_r == 0,
    )
    return out


def _surface_metrics(p: np.ndarray, r: np.ndarray, spacing: tuple[float, ...], tol: float) -> tuple[float, float]:
    """HD95 and NSD of two non-empty masks with MONAI, on their joint bounding box (+1 voxel) only."""
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    union = p | r
    box = []
    for axis in range(union.ndim):
        idx = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2))
    yp = torch.from_numpy(np.ascontiguousarray(p[tuple(box)], dtype=np.float32))[None, None]  # (1, 1, *spatial)
    yr = torch.from_numpy(np.ascontiguousarray(r[tuple(box)], dtype=np.float32))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own internal deprecation notice
        hd = compute_hausdorff_distance(yp, yr, include_background=True, percentile=95, spacing=list(spacing))
        nsd = compute_surface_dice(yp, yr, [tol], include_background=True, spacing=list(spacing))
    return float(hd[0, 0]), float(nsd[0, 0])


def spacing_from_affine(affine: np.ndarray, ndim: int = 3) -> tuple[float, ...]:
    """Voxel size along each array axis: the norms of the affine's first ``ndim`` columns."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :ndim] ** 2).sum(axis=0)))


def _read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    _, affine, data = read_volume(path)
    arr = np.asarray(data)
    while arr.ndim > 3 and arr.shape[-1] == 1:  # (X, Y, Z, 1) label files
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{path}: a label map must be 3D, got shape {tuple(arr.shape)}")
    return _as_labels(arr, str(path)), affine


def evaluate_pair(
    pred_path: str | Path | None,
    label_path: str | Path,
    classes: ClassSpec | None = None,
    nsd_tolerance_mm: float = 2.0,
    names: Mapping[int, str] | None = None,
) -> CaseMetrics:
    """Read a prediction and its reference, check they share a voxel grid, and compute :func:`case_metrics`.

    Args:
        pred_path: predicted label file (NIfTI, NRRD, MHA, ...); None scores a *missing* prediction as an empty one
            (every class of the reference missed: Dice 0, worst-case HD95).
        label_path: reference label file.
        classes: foreground values or ``{value: name}``; default: every non-zero value found in either file.
        nsd_tolerance_mm: tolerance τ of the normalised surface Dice.
        names: ``{value: name}`` used for the values in ``classes`` (e.g. from ``dataset.json``); others keep
            their number as name.

    Raises:
        ValueError: when shapes differ or the affines differ by more than 1e-3 (the message names both files).
    """
    label, aff_l = _read_labels(Path(label_path))
    if pred_path is None:
        pred, aff_p = np.zeros_like(label), aff_l
    else:
        pred, aff_p = _read_labels(Path(pred_path))
    if pred.shape != label.shape or not np.allclose(aff_p, aff_l, atol=1e-3):
        raise ValueError(
            f"geometry mismatch: prediction {pred_path} (shape {pred.shape}) and label {label_path} "
            f"(shape {label.shape}) do not share a voxel grid (affines {np.round(aff_p, 4).tolist()} vs "
            f"{np.round(aff_l, 4).tolist()})"
        )
    if classes is None:
        classes = [int(v) for v in np.union1d(np.unique(label), np.unique(pred)) if v != 0]
    named = class_names(classes)
    if names and not isinstance(classes, Mapping):
        named = {v: str(names.get(v, n)) for v, n in named.items()}
    return case_metrics(pred, label, spacing_from_affine(aff_l, label.ndim), named, nsd_tolerance_mm)


def read_label_names(dataset_json: str | Path) -> dict[int, str]:
    """Foreground label names ``{value: name}`` of a ``dataset.json`` (MSD or nnU-Net style ``labels``).

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not valid JSON or its ``labels`` cannot be read.
    """
    import json

    from medseg.data.discovery import parse_labels

    path = Path(dataset_json)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return {v: n for v, n in parse_labels(json.loads(path.read_text())).items() if v != 0}
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: cannot read its labels ({type(err).__name__}: {err})") from None


def dataset_label_names(label_dir: str | Path) -> dict[int, str]:
    """:func:`read_label_names` of the ``dataset.json`` in ``label_dir`` or its parent (MSD / nnU-Net
    ``labelsTr``); ``{}`` when there is none or it cannot be read."""
    for folder in (Path(label_dir), Path(label_dir).parent):
        if (folder / "dataset.json").is_file():
            try:
                return read_label_names(folder / "dataset.json")
            except (OSError, ValueError):
                return {}
    return {}


def index_folder(folder: str | Path) -> dict[str, Path]:
    """``{case name: file}`` of the image files in ``folder`` (suffixes .nii.gz/.nii/.nrrd/.mha/.mhd stripped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image_file(path) or path.name.startswith("."):
            continue
        case = strip_suffix(path.name)
        if case in found:
            raise ValueError(f"{folder}: two files for case {case!r}: {found[case].name} and {path.name}")
        found[case] = path
    return found


def evaluate_folder(
    pred_dir: str | Path,
    label_dir: str | Path,
    classes: ClassSpec | None = None,
    nsd_tolerance_mm: float = 2.0,
    names: Mapping[int, str] | None = None,
    skip_missing: bool = False,
) -> dict[str, Any]:
    """Evaluate every labelled case: its prediction in ``pred_dir`` against the label of the same case name.

    Without ``classes``, each case is scored on its own non-zero values, then every case gets every class seen in
    any case (a class absent from both files of a case is *absent*: no score, excluded). A labelled case without a
    prediction is a failure — scored as an empty prediction (Dice 0, worst-case HD95 for every class its label
    holds) and flagged ``missing_prediction`` — unless ``skip_missing``, which leaves it out (and still lists it).

    Args:
        pred_dir: folder of predicted label files.
        label_dir: folder of reference label files.
        classes: foreground values or ``{value: name}``; default: every non-zero value found.
        nsd_tolerance_mm: tolerance τ of the normalised surface Dice.
        names: ``{value: name}`` of the classes; default: the ``dataset.json`` beside the labels
            (:func:`dataset_label_names`), else the values themselves (``"1"``, ``"2"``).
        skip_missing: leave labelled cases without a prediction out instead of scoring them as failures.

    Returns:
        ``{"per_case": [{case, metrics, dice_mean, hd95_mean, nsd_mean[, missing_prediction]}], "summary":
        summarize_cases(...), "classes", "unmatched": {"pred_only", "label_only"}, "missing_predictions",
        "missing_policy", "nsd_tolerance_mm", "pred_dir", "label_dir"}``.

    Raises:
        FileNotFoundError: when a folder is missing.
        ValueError: when no labelled case has a prediction, or on a geometry mismatch.
    """
    from medseg.evaluation.aggregate import case_means, summarize_cases

    preds, labels = index_folder(pred_dir), index_folder(label_dir)
    matched = sorted(set(preds) & set(labels))
    if not matched:
        raise ValueError(
            f"no case is in both {pred_dir} ({len(preds)} image files) and {label_dir} ({len(labels)} image files)"
        )
    missing = sorted(set(labels) - set(preds))
    cases = matched if skip_missing else sorted(labels)
    names = dataset_label_names(label_dir) if names is None else dict(names)
    results, problems = {}, []
    for c in cases:  # every pair is read before anything is reported: one error lists every bad file
        try:
            results[c] = evaluate_pair(preds.get(c), labels[c], classes, nsd_tolerance_mm, names)
        except (OSError, ValueError) as err:
            problems.append(" ".join(str(err).split()))
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ValueError(f"{len(problems)} of {len(cases)} case(s) cannot be scored (nothing was written):\n{listed}")
    order = list(class_names(classes).values()) if isinstance(classes, Mapping) else None
    if order is None:
        values = [int(v) for v in classes] if classes is not None else sorted(_values(results.values(), names))
        order = [str(names.get(v, v)) for v in values]
    per_case = []
    for case in cases:
        metrics = {n: results[case].get(n) or absent_class_metrics() for n in order}
        row = {"case": case, "metrics": metrics, **case_means(metrics)}
        if case in missing:
            row["missing_prediction"] = True
        per_case.append(row)
    return {
        "per_case": per_case,
        "summary": summarize_cases(per_case),
        "classes": order,
        "unmatched": {"pred_only": sorted(set(preds) - set(labels)), "label_only": missing},
        "missing_predictions": missing,
        "missing_policy": "skipped (--skip-missing)" if skip_missing else MISSING_POLICY,
        "nsd_tolerance_mm": nsd_tolerance_mm,
        "pred_dir": str(pred_dir),
        "label_dir": str(label_dir),
    }


MISSING_POLICY = "a labelled case without a prediction scores as an empty prediction (Dice 0, worst-case HD95)"


def _values(results: Any, names: Mapping[int, str]) -> set[int]:
    """Label values of the class names in ``results`` (names map back through ``names``; others are numbers)."""
    by_name = {str(n): v for v, n in names.items()}
    return {by_name[k] if k in by_name else int(k) for metrics in results for k in metrics}
