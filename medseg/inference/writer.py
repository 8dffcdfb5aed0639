"""Writing label maps with the exact geometry of a reference image, atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.dicom import is_dicom_ref
from medseg.data.io import is_nifti, strip_suffix
from medseg.fileio import atomic_path


def _suffix(name: str) -> str:
    return name[len(strip_suffix(name)) :] or ".nii.gz"


def write_like(data: np.ndarray, reference: str | Path, out_path: str | Path) -> Path:
    """Write ``data`` (same shape as ``reference``) with the reference's affine/header (NIfTI) or origin/spacing/
    direction (ITK formats, DICOM series), via a temporary file renamed into place. Never writes onto ``reference``."""
    reference, out_path = Path(reference), Path(out_path)
    if out_path.exists() and out_path.resolve() == reference.resolve():
        raise ValueError(f"{out_path}: refusing to overwrite the input image")
    with atomic_path(out_path, _suffix(out_path.name)) as tmp:
        if not reference.is_file() and is_dicom_ref(reference):
            _write_dicom_like(data, str(reference), tmp)
        elif is_nifti(out_path.name) and is_nifti(reference.name):
            _write_nifti(data, reference, tmp)
        else:
            _write_itk(data, reference, tmp)
    return out_path


def _write_nifti(data: np.ndarray, reference: Path, tmp: Path) -> None:
    ref: Any = nib.load(str(reference))
    if tuple(ref.shape[:3]) != tuple(data.shape):
        raise ValueError(f"{reference}: prediction shape {data.shape} != input shape {tuple(ref.shape[:3])}")
    header = ref.header.copy()  # qform/sform, their codes, pixdim and units stay byte-identical
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)  # labels are stored as is, whatever scaling the image had
    header["cal_min"], header["cal_max"] = 0.0, 0.0
    img = nib.Nifti1Image(data, None, header=header)  # affine None: the header's geometry is written unchanged
    nib.save(img, str(tmp))


def _write_itk(data: np.ndarray, reference: Path, tmp: Path) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    out.SetOrigin(reader.GetOrigin())
    out.SetSpacing(reader.GetSpacing())
    out.SetDirection(reader.GetDirection())
    sitk.WriteImage(out, str(tmp), useCompression=True)


def _write_dicom_like(data: np.ndarray, series: str, tmp: Path) -> None:
    """``data`` (X, Y, Z) on the grid of a DICOM series: SimpleITK's origin, spacing and direction of the series."""
    import SimpleITK as sitk

    from medseg.data.dicom import check_series, gdcm_call

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(check_series(series))
    with gdcm_call():
        image = reader.Execute()
    if tuple(image.GetSize()) != tuple(data.shape):
        raise ValueError(f"{series}: prediction shape {data.shape} != series shape {tuple(image.GetSize())}")
    out = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    out.CopyInformation(image)
    sitk.WriteImage(out, str(tmp), useCompression=True)
