"""Reading headers/arrays of NIfTI (nibabel) and other ITK formats (SimpleITK)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.dicom import is_dicom_ref, read_series

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".mha", ".mhd", ".nhdr")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


def strip_suffix(name: str) -> str:
    """Case name without its image suffix (``case_01.nii.gz`` → ``case_01``)."""
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(IMAGE_SUFFIXES)


def read_volume(path: str | Path, header_only: bool = False) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None]:
    """Read ``(shape, affine_ras, data)`` of an image; ``data`` is None with ``header_only``.

    The affine maps voxel indices to RAS+ world millimetres for every format (ITK's LPS is converted). A DICOM
    series folder is read by :func:`medseg.data.dicom.read_series`.
    Raises ``OSError`` / ``ValueError`` with the file name when the file cannot be read.
    """
    path = Path(path)
    if not path.is_file() and is_dicom_ref(path):  # a DICOM series folder (medseg.data.dicom)
        return read_series(str(path), header_only)
    try:
        if path.name.endswith(NIFTI_SUFFIXES):
            img: Any = nib.load(str(path))
            data = None if header_only else np.asanyarray(img.dataobj)
            return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=np.float64), data
        return _read_itk(path, header_only)
    except Exception as err:  # noqa: BLE001 - every reader error becomes one clear message
        raise OSError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def _read_itk(path: Path, header_only: bool) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = tuple(int(s) for s in reader.GetSize())
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(len(size), len(size))
    origin = np.asarray(reader.GetOrigin(), dtype=np.float64)
    n = len(size)
    affine = np.eye(4)
    affine[:n, :n] = direction * spacing[None, :]
    affine[:n, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS
    data = None
    if not header_only:
        data = sitk.GetArrayFromImage(reader.Execute()).transpose(tuple(range(n))[::-1])
    return size, affine, data


def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing along the R, A, S axes after reorientation to RAS (what ``Orientationd`` gives)."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ornt = nib.orientations.io_orientation(affine)
    out = np.empty(3)
    for vox_axis, (world_axis, _) in enumerate(ornt):
        out[int(world_axis)] = zooms[vox_axis]
    return out
