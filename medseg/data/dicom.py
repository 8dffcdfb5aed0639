"""DICOM series as input volumes (SimpleITK's series reader), refused by name when they are not one consistent series.

A series is named by a *reference*: its folder, or ``<folder>::<SeriesInstanceUID>`` when the folder holds several
series. :func:`find_series` lists the series under a folder (the folder itself and its sub-folders);
:func:`read_series` checks a series and returns its voxels and RAS affine exactly as SimpleITK reads the geometry
(origin of the first slice, pixel spacing, the distance between slice positions, the direction cosines; LPS → RAS).

Consistent means: every file has the same ImageOrientationPatient and size, the slice positions lie on one line
along the slice normal, none repeats, and their steps are equal (a missing slice shows as a step twice the others).
"""

from __future__ import annotations

import contextlib
import locale
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEP = "::"
ORIENTATION, POSITION, ROWS, COLUMNS = "0020|0037", "0020|0032", "0028|0010", "0028|0011"
TOL_COSINE, TOL_STEP = 1e-4, 0.05  # orientation cosines; relative deviation of a slice step from the median step


class SeriesError(ValueError):
    """A folder that is not one consistent DICOM series; the message names it and says why."""


@dataclass
class Series:
    """One series found under a folder: its reference (what ``read_series`` takes), a case name and its files."""

    ref: str
    name: str
    files: list[str]


@contextlib.contextmanager
def gdcm_call() -> Iterator[None]:
    """Around a SimpleITK/GDCM call: its C++ warnings are not printed (medseg reports what is wrong in one line of its
    own), and the process locale is restored afterwards — GDCM sets it to ``C``, and left so, Python's default text
    encoding turns ASCII and every later ``open()`` of a non-ASCII text file in the process fails."""
    import SimpleITK as sitk

    saved = locale.setlocale(locale.LC_ALL)
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
        locale.setlocale(locale.LC_ALL, saved)


def is_dicom_ref(path: str | Path) -> bool:
    """Whether ``path`` names a DICOM series (a folder, or ``folder::uid``) rather than an image file."""
    text = str(path)
    folder = text.split(SEP, 1)[0]
    return Path(folder).is_dir()


def _series_ids(folder: Path) -> list[str]:
    import SimpleITK as sitk

    with gdcm_call():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or [])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._") or "series"


def find_series(folder: str | Path) -> list[Series]:
    """The DICOM series in ``folder`` and in its sub-folders (one level), named by their folder when it holds one
    series, else by SeriesInstanceUID; [] when there is none."""
    import SimpleITK as sitk

    root = Path(folder)
    found: list[Series] = []
    for sub in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        ids = _series_ids(sub)
        for uid in ids:
            with gdcm_call():
                files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(sub), uid))
            ref = str(sub) if len(ids) == 1 else f"{sub}{SEP}{uid}"
            name = _safe(sub.name) if len(ids) == 1 else _safe(uid)
            found.append(Series(ref, name, files))
    return found


def _files(ref: str) -> list[str]:
    import SimpleITK as sitk

    folder, _, uid = ref.partition(SEP)
    ids = _series_ids(Path(folder))
    if not ids:
        raise SeriesError(f"{folder}: no DICOM series in this folder")
    if not uid:
        if len(ids) > 1:
            raise SeriesError(f"{folder}: {len(ids)} DICOM series in one folder; name one as {folder}{SEP}<uid>")
        uid = ids[0]
    if uid not in ids:
        raise SeriesError(f"{folder}: no series {uid} (found {', '.join(ids)})")
    with gdcm_call():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))


def check_series(ref: str) -> list[str]:
    """The files of the series ``ref`` in slice order, after checking that they form one consistent volume."""
    import SimpleITK as sitk

    files = _files(ref)
    tags: list[dict[str, str]] = []
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(f)
        with gdcm_call():
            reader.ReadImageInformation()
        tags.append({k: reader.GetMetaData(k) if reader.HasMetaDataKey(k) else "" for k in (ORIENTATION, POSITION)})
        tags[-1]["size"] = str(reader.GetSize()[:2])
    name = ref.split(SEP, 1)[0]
    if len({t["size"] for t in tags}) > 1:
        raise SeriesError(
            f"{name}: not one consistent series: slices of different sizes {sorted({t['size'] for t in tags})}"
        )
    if len(files) > 1:
        _check_geometry(name, files, tags)
    return files


def _floats(text: str, n: int, what: str, name: str) -> np.ndarray:
    try:
        values = np.array([float(v) for v in text.split("\\")], float)
    except ValueError:
        values = np.zeros(0)
    if values.size != n:
        raise SeriesError(f"{name}: not one consistent series: a slice has no valid {what} ({text!r})")
    return values


def _check_geometry(name: str, files: list[str], tags: list[dict[str, str]]) -> None:
    cosines = np.stack([_floats(t[ORIENTATION], 6, "ImageOrientationPatient", name) for t in tags])
    if np.abs(cosines - cosines[0]).max() > TOL_COSINE:
        bad = Path(files[int(np.argmax(np.abs(cosines - cosines[0]).max(1)))]).name
        raise SeriesError(f"{name}: not one consistent series: mixed slice orientations (e.g. {bad})")
    row, col = cosines[0, :3], cosines[0, 3:]
    normal = np.cross(row, col)
    positions = np.stack([_floats(t[POSITION], 3, "ImagePositionPatient", name) for t in tags])
    along = positions @ normal
    off_line = positions - np.outer(along, normal)
    if np.abs(off_line - off_line[0]).max() > 1e-2 * max(1.0, float(np.ptp(along))):
        raise SeriesError(f"{name}: not one consistent series: slice positions do not lie on one line")
    order = np.sort(along)
    steps = np.diff(order)
    if (steps < 1e-6).any():
        raise SeriesError(f"{name}: not one consistent series: {int((steps < 1e-6).sum())} repeated slice position(s)")
    median = float(np.median(steps))
    gaps = np.flatnonzero(np.abs(steps - median) > TOL_STEP * median)
    if gaps.size:
        i = int(gaps[0])
        raise SeriesError(
            f"{name}: not one consistent series: missing or uneven slices (step {steps[i]:.3g} mm between slice "
            f"positions {order[i]:.4g} and {order[i + 1]:.4g}, the others {median:.3g} mm)"
        )


def read_series(ref: str, header_only: bool = False) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None]:
    """``(shape, affine_ras, data)`` of the series ``ref``, like :func:`medseg.data.io.read_volume` (``data`` is
    (X, Y, Z): columns, rows, slices); a :class:`SeriesError` naming the folder when it is not one consistent
    series."""
    import SimpleITK as sitk

    files = check_series(ref)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    with gdcm_call():
        image = reader.Execute()
    affine = itk_affine(image)
    size = tuple(int(s) for s in image.GetSize())
    data = None if header_only else sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return size, affine, data


def itk_affine(image: Any) -> np.ndarray:
    """The voxel → RAS+ world affine of a SimpleITK image (ITK's LPS converted)."""
    n = image.GetDimension()
    direction = np.asarray(image.GetDirection(), float).reshape(n, n)
    affine = np.eye(4)
    affine[:n, :n] = direction * np.asarray(image.GetSpacing(), float)[None, :]
    affine[:n, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
