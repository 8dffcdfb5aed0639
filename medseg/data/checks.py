"""Dataset validation: every problem of every case is collected, then reported at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.discovery import DatasetError, DatasetSpec
from medseg.data.io import ras_spacing, read_volume


@dataclass
class Problem:
    """One problem with one case: ``severity`` is ``error`` (blocks training) or ``warning``."""

    case: str
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.case}: {self.path}: {self.message}"


@dataclass
class CaseInfo:
    """What the check learned about a readable case (used for spacing and intensity statistics)."""

    shape: tuple[int, ...]
    spacing: np.ndarray
    label_values: set[int]
    fg_sample: np.ndarray


def check_dataset(spec: DatasetSpec, atol: float = 1e-3) -> tuple[dict[str, CaseInfo], list[Problem]]:
    """Read every case fully and return per-case info plus the list of problems (empty when all is well)."""
    infos: dict[str, CaseInfo] = {}
    problems: list[Problem] = []
    if not spec.cases:
        problems.append(Problem("-", str(spec.root), "no training cases found"))
    seen: set[str] = set()
    for case in spec.cases:
        if case["id"] in seen:
            problems.append(Problem(case["id"], case["image"][0], "duplicate case id"))
        seen.add(case["id"])
        info, case_problems = check_case(case, atol)
        problems += case_problems
        if info is not None:
            infos[case["id"]] = info
    if spec.labels:
        for case_id, info in infos.items():
            unknown = sorted(info.label_values - set(spec.labels))
            if unknown:
                problems.append(
                    Problem(case_id, "label", f"label values {unknown} not declared in dataset.json labels")
                )
    return infos, problems


def check_case(case: dict[str, Any], atol: float = 1e-3) -> tuple[CaseInfo | None, list[Problem]]:
    """Check one case: readable files, 3D, finite intensities, label present with the image's shape and affine."""
    problems: list[Problem] = []
    cid = case["id"]
    images = []
    for path in case["image"]:
        if not Path(path).is_file():
            problems.append(Problem(cid, path, "image file missing"))
            continue
        try:
            images.append((path, *read_volume(path)))
        except OSError as err:
            problems.append(Problem(cid, path, f"unreadable: {err.__cause__ or err}"))
    label = case.get("label")
    lab = None
    if label is None or not Path(label).is_file():
        problems.append(Problem(cid, str(label), "label file missing"))
    else:
        try:
            lab = read_volume(label)
        except OSError as err:
            problems.append(Problem(cid, label, f"unreadable: {err.__cause__ or err}"))
    if not images or problems:
        return None, problems
    ref_path, ref_shape, ref_affine, ref_data = images[0]
    for path, shape, affine, data in images:
        problems += _check_image(cid, path, shape, affine, data, ref_shape, ref_affine, atol)
    assert lab is not None and label is not None
    problems += _check_label(cid, label, lab, ref_shape, ref_affine, atol)
    if any(p.severity == "error" for p in problems):
        return None, problems
    assert lab[2] is not None and ref_data is not None
    return _case_info(ref_data, ref_affine, lab[2]), problems


def _check_image(
    cid: str,
    path: str,
    shape: tuple,
    affine: np.ndarray,
    data: Any,
    ref_shape: tuple,
    ref_affine: np.ndarray,
    atol: float,
) -> list[Problem]:
    out = []
    if len(shape) != 3:
        out.append(Problem(cid, path, f"expected a 3D image, got shape {shape}"))
    elif min(shape) < 1:
        out.append(Problem(cid, path, f"empty image axis, shape {shape}"))
    if shape != ref_shape:
        out.append(Problem(cid, path, f"channel shape {shape} differs from first channel {ref_shape}"))
    elif not np.allclose(affine, ref_affine, atol=atol):
        out.append(Problem(cid, path, "channel affine differs from the first channel"))
    if data is not None and not np.issubdtype(data.dtype, np.number):
        out.append(Problem(cid, path, f"unsupported dtype {data.dtype}"))
    elif data is not None and data.size and not np.isfinite(data).all():
        out.append(Problem(cid, path, f"{int((~np.isfinite(data)).sum())} NaN/Inf intensities"))
    return out


def _check_label(
    cid: str, path: str, lab: tuple, ref_shape: tuple, ref_affine: np.ndarray, atol: float
) -> list[Problem]:
    shape, affine, data = lab
    out = []
    if tuple(shape) != tuple(ref_shape):
        out.append(Problem(cid, path, f"label shape {tuple(shape)} != image shape {tuple(ref_shape)}"))
    elif not np.allclose(affine, ref_affine, atol=atol):
        out.append(Problem(cid, path, "label affine differs from the image affine (mismatched geometry)"))
    if data is not None and data.size:
        if not np.isfinite(data).all() or not np.allclose(data, np.round(data)) or data.min() < 0:
            out.append(Problem(cid, path, "label values must be non-negative integers"))
        elif not (data > 0).any():
            out.append(Problem(cid, path, "label is empty (no foreground)", "warning"))
    return out


def _case_info(image: np.ndarray, affine: np.ndarray, label: np.ndarray, n_sample: int = 20000) -> CaseInfo:
    fg = image[label > 0] if label.shape == image.shape else image.ravel()
    if fg.size > n_sample:
        fg = np.random.default_rng(0).choice(fg, n_sample, replace=False)
    values = {int(v) for v in np.unique(label)}
    return CaseInfo(tuple(image.shape), ras_spacing(affine), values, fg.astype(np.float32))


def raise_on_errors(problems: list[Problem], root: Path) -> None:
    """Raise one DatasetError naming every erroneous case; warnings pass."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  - {p}" for p in errors)
        bad = sorted({p.case for p in errors})
        raise DatasetError(f"data.root={root}: {len(errors)} problem(s) in {len(bad)} case(s) {bad}:\n{lines}")
