"""Dataset validation: every problem of every case is collected, then reported at once.

Each file is read once. Before a NIfTI file's voxels are read, the size its header declares is compared with the bytes
the file holds, so a damaged header cannot make the check allocate gigabytes.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.discovery import DatasetError, DatasetSpec
from medseg.data.io import ImageError, inspect_image, is_image_file, is_nifti, ras_spacing, read_volume, strip_suffix
from medseg.data.labels import class_values

Volume = tuple[tuple[int, ...], np.ndarray, Any]


@dataclass
class Problem:
    """One problem with one case: ``severity`` is ``error`` (blocks training) or ``warning``."""

    case: str
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.case}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class CaseInfo:
    """What the check learned about a readable case (used for spacing and intensity statistics)."""

    shape: tuple[int, ...]
    spacing: np.ndarray
    label_values: set[int]
    fg_sample: np.ndarray


CaseCheck = Callable[[dict[str, Any], float], tuple["CaseInfo | None", list[Problem]]]


def check_dataset(
    spec: DatasetSpec, atol: float = 1e-3, check: CaseCheck | None = None
) -> tuple[dict[str, CaseInfo], list[Problem]]:
    """Read every case fully and return per-case info plus the list of problems (empty when all is well).

    Also reported: the unusable ``dataset.json`` entries discovery collected (``spec.problems``), duplicate case ids,
    label values not declared in ``dataset.json`` and (warnings) files of the nnU-Net / folder layouts no case uses.

    Args:
        spec: the discovered dataset.
        atol: tolerance of affine comparisons.
        check: checks one case (default :func:`check_case`); ``medseg.data.check_cache.cached_check_case`` reads
            the results of unchanged cases from disk instead.
    """
    check = check or check_case
    infos: dict[str, CaseInfo] = {}
    problems = [Problem(case, path, message) for case, path, message in spec.problems]
    if not spec.cases:
        problems.append(Problem("-", str(spec.root), "no training cases found"))
    seen: dict[str, str] = {}
    for case in spec.cases:
        if case["id"] in seen:
            problems.append(Problem(case["id"], case["image"][0], f"duplicate case id (also {seen[case['id']]})"))
        seen.setdefault(case["id"], case["image"][0])
        info, case_problems = check(case, atol)
        problems += case_problems
        if info is not None:
            infos[case["id"]] = info
    problems += _channel_count(spec, infos)
    labels = {c["id"]: str(c["label"]) for c in spec.cases}
    if spec.labels:
        for case_id, info in infos.items():
            unknown = sorted(info.label_values - set(spec.labels))
            if unknown:
                message = f"label values {unknown} not declared in dataset.json labels {sorted(spec.labels)}"
                problems.append(Problem(case_id, labels[case_id], message))
    elif infos:
        try:
            class_values({}, set().union(*(i.label_values for i in infos.values())), str(spec.root / "dataset.json"))
        except DatasetError as err:
            problems.append(Problem("-", str(spec.root), str(err)))
    return infos, problems + _channel_counts(spec, infos) + _unused_files(spec)


def _channel_counts(spec: DatasetSpec, infos: dict[str, CaseInfo]) -> list[Problem]:
    """Every case needs the same number of image channels (files, and a 4D file's 4th dimension), else training
    fails mid-way; checked also when ``dataset.json`` names no channels."""
    # only cases that passed their own checks: an unreadable case's channels are unknown (it is reported already)
    counts = {c["id"]: case_channels(c, infos[c["id"]]) for c in spec.cases if c["id"] in infos}
    if len(set(counts.values())) <= 1:
        return []
    values = list(counts.values())
    usual = max(set(values), key=values.count)
    return [
        Problem(c["id"], str(c["image"][0]), f"{counts[c['id']]} image channel(s), most cases have {usual}")
        for c in spec.cases
        if c["id"] in counts and counts[c["id"]] != usual
    ]


def case_channels(case: dict[str, Any], info: CaseInfo) -> int:
    """Image channels of a checked case: its files, times the 4th dimension of a 4D file (channels last)."""
    return len(case["image"]) * (int(info.shape[3]) if len(info.shape) == 4 else 1)


def _channel_count(spec: DatasetSpec, infos: dict[str, CaseInfo]) -> list[Problem]:
    """Cases whose channel count differs from the channels ``dataset.json`` names."""
    if not spec.channels:
        return []
    out = []
    for case in spec.cases:
        info = infos.get(case["id"])
        if info is not None and (n := case_channels(case, info)) != len(spec.channels):
            where = " (a 4D file: channels in its 4th dimension)" if len(info.shape) == 4 else ""
            out.append(
                Problem(
                    case["id"],
                    case["image"][0],
                    f"image has {n} channel(s){where} but dataset.json names {len(spec.channels)}: {spec.channels}",
                )
            )
    return out


def check_case(case: dict[str, Any], atol: float = 1e-3) -> tuple[CaseInfo | None, list[Problem]]:
    """Check one case: readable files, 3D, supported dtypes, finite intensities, a valid affine, and a label with
    the image's shape and affine holding non-negative integers."""
    problems: list[Problem] = []
    cid = case["id"]
    images = []
    for path in case["image"]:
        volume = _load(cid, str(path), "image", problems)
        if volume is not None:
            images.append((str(path), *volume))
    label = case.get("label")
    lab = None
    if label is None:
        problems.append(Problem(cid, str(case["image"][0]), "no label file given for this case"))
    else:
        lab = _load(cid, str(label), "label", problems)
    if not images or problems:
        return None, problems
    ref_path, ref_shape, ref_affine, ref_data = images[0]
    for path, shape, affine, data in images:
        problems += _check_image(cid, path, shape, affine, data, ref_shape, ref_affine, atol)
    assert lab is not None and label is not None
    ref_ok = len(ref_shape) in (3, 4) and _affine_problem(ref_affine) is None  # else the label comparison says no more
    problems += _check_label(cid, str(label), lab, ref_shape[:3] if ref_ok else None, ref_affine, atol)
    if any(p.severity == "error" for p in problems):
        return None, problems
    assert lab[2] is not None and ref_data is not None
    return _case_info(ref_data, ref_affine, lab[2]), problems


def _load(cid: str, path: str, kind: str, problems: list[Problem]) -> Volume | None:
    """``read_volume(path)``, or None with the reason appended to ``problems``."""
    try:
        exists = Path(path).is_file()
    except OSError as err:  # a symlink loop, a name too long, ...
        problems.append(Problem(cid, path, f"{kind} file cannot be opened ({err.strerror or err})"))
        return None
    if not exists:
        broken = Path(path).is_symlink()
        problems.append(Problem(cid, path, f"{kind} file missing" + (" (a broken symbolic link)" if broken else "")))
        return None
    truncated = _truncation(Path(path))
    if truncated:
        problems.append(Problem(cid, path, f"unreadable: {truncated}"))
        return None
    try:
        inspect_image(path)  # voxel type, declared size against the file and the memory budget
    except ImageError as err:
        problems.append(Problem(cid, path, _unreadable(err) if err.__cause__ else str(err).removeprefix(f"{path}: ")))
        return None
    try:
        return read_volume(path)
    except OSError as err:
        problems.append(Problem(cid, path, _unreadable(err)))
        return None


def _unreadable(err: OSError) -> str:
    cause = err.__cause__ or err
    name, text = type(cause).__name__, " ".join(str(cause).split())
    if isinstance(cause, EOFError) or ("Expected" in text and "bytes" in text):
        return f"unreadable: truncated file ({name}: {text})"
    if isinstance(cause, (zlib.error, gzip.BadGzipFile)):
        return f"unreadable: corrupt compressed data ({name}: {text})"
    if name == "ImageFileError":
        return f"unreadable: not an image file or a damaged header ({name}: {text})"
    if name == "HeaderDataError" or "quatern" in text or "w2 should be positive" in text:
        return f"unreadable: invalid header fields ({name}: {text})"
    return f"unreadable ({name}: {text})"


SMALL_BYTES = 1 << 28  # declared voxel data up to 256 MB is simply read; beyond, a .nii.gz is first measured


def _truncation(path: Path) -> str | None:
    """For NIfTI: a message when the file holds fewer voxel bytes than its header declares (or a truncated header or
    compressed stream), else None — so that a damaged header cannot make the reader allocate gigabytes. A large
    ``.nii.gz`` whose gzip trailer does not confirm the declared size is decompressed in 4 MB chunks and counted."""
    if not is_nifti(path.name):
        return None
    gz = path.name.lower().endswith(".gz")
    try:
        img: Any = nib.load(str(path))
        declared = int(np.prod([int(s) for s in img.shape], dtype=object)) * img.header.get_data_dtype().itemsize
        offset = int(img.header.get_data_offset())
    except Exception:  # noqa: BLE001 - an unreadable header: say so when it is cut short, else the reader reports
        return _cut_header(path, gz)
    if not gz:
        held = path.stat().st_size - offset
    elif declared <= SMALL_BYTES or _gzip_trailer_size(path) == (offset + declared) % 2**32:
        return None  # small enough to let the reader find out, or the gzip trailer confirms the size
    else:
        total, why = _gzip_count(path, offset + declared)
        held = total - offset
        if why == "corrupt":
            return f"corrupt compressed data (after {total} bytes)"
    if held >= declared:
        return None
    return f"truncated file (the header declares {declared} bytes of voxel data, the file holds {max(held, 0)})"


def _cut_header(path: Path, gz: bool) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(4)
    if gz and head[:2] == b"\x1f\x8b":
        total, why = _gzip_count(path, 1 << 16)
        if why == "truncated":
            return f"truncated file (the compressed data ends early, after {total} bytes)"
        return f"corrupt compressed data (after {total} bytes)" if why == "corrupt" else None
    size = path.stat().st_size
    if not gz and size < 348 and head in ((348).to_bytes(4, "little"), (348).to_bytes(4, "big")):
        return f"truncated file ({size} bytes; a NIfTI-1 header alone takes 348)"
    return None


def _gzip_trailer_size(path: Path) -> int:
    """The size the gzip trailer records (uncompressed size of the last member, mod 2**32); -1 if none."""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < 18:
            return -1
        fh.seek(-4, 2)
        return int.from_bytes(fh.read(4), "little")


def _gzip_count(path: Path, needed: int) -> tuple[int, str | None]:
    """Decompressed bytes of a gzip file, counted up to ``needed`` without holding them, and what stopped the count
    early: None (the end, or ``needed`` reached), ``truncated`` or ``corrupt``."""
    total = 0
    try:
        with gzip.open(path, "rb") as gz:
            while total < needed:
                chunk = gz.read(min(1 << 22, needed - total))
                if not chunk:
                    break
                total += len(chunk)
    except EOFError:
        return total, "truncated"
    except (OSError, zlib.error):
        return total, "corrupt"
    return total, None


def _affine_problem(affine: np.ndarray) -> str | None:
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    if not np.isfinite(affine).all():
        return "affine (voxel → world) contains NaN/Inf"
    zooms = np.sqrt((linear**2).sum(axis=0))
    if zooms.min() <= 1e-8 or abs(np.linalg.det(linear)) <= 1e-8 * float(np.prod(zooms)):
        return f"affine (voxel → world) is singular: zero or collinear voxel axes (spacing {np.round(zooms, 6)})"
    return None


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
    if len(shape) not in (3, 4):  # 4D: the channels in the 4th dimension (MSD's multi-modal tasks)
        hint = "; store 2D images as 3D volumes with one slice" if len(shape) == 2 else ""
        out.append(Problem(cid, path, f"expected a 3D image (or 4D with channels last), got shape {shape}{hint}"))
    elif min(shape) < 1:
        out.append(Problem(cid, path, f"empty image axis, shape {shape}"))
    if shape != ref_shape:
        out.append(Problem(cid, path, f"channel shape {shape} differs from first channel {ref_shape}"))
    elif (bad_affine := _affine_problem(affine)) is not None:
        out.append(Problem(cid, path, bad_affine))
    elif not np.allclose(affine, ref_affine, atol=atol):
        out.append(Problem(cid, path, "channel affine differs from the first channel"))
    if data is not None and data.dtype.kind not in "iuf":
        out.append(Problem(cid, path, f"unsupported dtype {data.dtype} (images must hold real numbers)"))
    elif data is not None and data.size and not np.isfinite(data).all():
        out.append(Problem(cid, path, f"{int((~np.isfinite(data)).sum())} NaN/Inf intensities"))
    elif data is not None and data.size and not np.any(data):
        out.append(Problem(cid, path, "every voxel is 0 (an empty image)"))
    return out


def _check_label(
    cid: str, path: str, lab: Volume, ref_shape: tuple | None, ref_affine: np.ndarray, atol: float
) -> list[Problem]:
    """Values of the label, its own geometry, and (unless ``ref_shape`` is None) its match with the image."""
    shape, affine, data = lab
    out = []
    if len(shape) != 3:
        out.append(Problem(cid, path, f"expected a 3D label, got shape {tuple(shape)}"))
    elif ref_shape is not None and tuple(shape) != tuple(ref_shape):
        out.append(Problem(cid, path, f"label shape {tuple(shape)} != image shape {tuple(ref_shape)}"))
    elif (bad_affine := _affine_problem(affine)) is not None:
        out.append(Problem(cid, path, f"label {bad_affine}"))
    elif ref_shape is not None and not np.allclose(affine, ref_affine, atol=atol):
        out.append(Problem(cid, path, "label affine differs from the image affine (mismatched geometry)"))
    if data is None or not data.size:
        return out
    message = _label_values_problem(data)
    if message is not None:
        out.append(Problem(cid, path, message))
    elif not (data > 0).any():
        out.append(Problem(cid, path, "label is empty (no foreground)", "warning"))
    return out


def _label_values_problem(data: np.ndarray) -> str | None:
    rule = "label values must be non-negative integers"
    if data.dtype.kind not in "biuf":
        return f"unsupported label dtype {data.dtype}; {rule}"
    if data.dtype.kind == "f":
        bad = int((~np.isfinite(data)).sum())
        if bad:
            return f"label has {bad} NaN/Inf values; {rule}"
        if not np.array_equal(data, np.round(data)):
            example = data[data != np.round(data)].flat[0]
            return f"label has non-integer values (e.g. {float(example):g}); {rule}"
    if data.dtype.kind != "b" and data.min() < 0:
        return f"label has negative values (min {data.min()}); {rule}"
    return None


def _case_info(image: np.ndarray, affine: np.ndarray, label: np.ndarray, n_sample: int = 20000) -> CaseInfo:
    fg = image[label > 0] if label.shape == image.shape[:3] else image.ravel()  # 4D: (voxels, channels)
    if fg.size > n_sample:
        fg = np.random.default_rng(0).choice(fg, n_sample, replace=False)
    values = {int(v) for v in np.unique(label)}
    return CaseInfo(tuple(image.shape), ras_spacing(affine), values, fg.astype(np.float32))


_LAYOUT_FOLDERS = {
    "nnunet": (
        (
            "imagesTr",
            "image file not used: its name does not match <case>_<4-digit channel><file_ending> or its "
            "channel is not declared in dataset.json (ignored)",
        ),
        ("labelsTr", "label file without an image in imagesTr (ignored)"),
    ),
    "folders": (("labels", "label file without an image in images/ (ignored)"),),
}


def _unused_files(spec: DatasetSpec) -> list[Problem]:
    """Warnings for image files in the layout's folders that no case uses (a misnamed file is silently skipped)."""
    used = {str(p) for c in spec.cases for p in [*c["image"], c.get("label")] if p is not None}
    out = []
    for folder, message in _LAYOUT_FOLDERS.get(spec.layout, ()):
        if (spec.root / folder).is_dir():
            for path in sorted((spec.root / folder).iterdir()):
                if is_image_file(path) and str(path) not in used:
                    out.append(Problem(strip_suffix(path.name), str(path), message, "warning"))
    return out


def raise_on_errors(problems: list[Problem], root: Path) -> None:
    """Raise one DatasetError naming every erroneous case; warnings pass."""
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  - {p}" for p in errors)
        bad = sorted({p.case for p in errors})
        raise DatasetError(f"data.root={root}: {len(errors)} problem(s) in {len(bad)} case(s) {bad}:\n{lines}")
