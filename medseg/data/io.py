"""Reading headers/arrays of NIfTI (nibabel) and other ITK formats (SimpleITK), guarded.

Every reader of medseg (check-data, training, predict, evaluate, previews) goes through :func:`inspect_image` before
it allocates anything: a known image suffix (any case), a readable header, real-valued scalar voxels, a declared size
the file can actually hold (a gzip stream expands at most ~1032×) and that fits the memory budget. A damaged or
hostile header is refused by file name instead of allocating gigabytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.dicom import is_dicom_ref, read_series

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".mha", ".mhd", ".nhdr")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
MAX_EXPANSION = 1100  # deflate cannot expand more than 1032:1; a declared size beyond this is impossible
WORKING_COPIES = 3  # float32 copies a volume takes while it is loaded, converted and resampled


class ImageError(OSError):
    """An image that medseg will not read; the message names the file and the problem."""


def suffix_of(name: str) -> str:
    """The image suffix of a file name as written (``.nii.gz``, ``.NRRD``), or ``""``."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[-len(suffix) :]
    return ""


def strip_suffix(name: str) -> str:
    """Case name without its image suffix (``case_01.nii.gz`` → ``case_01``; any letter case)."""
    suffix = suffix_of(name)
    return name[: -len(suffix)] if suffix else name


def is_nifti(name: str | Path) -> bool:
    return str(name).lower().endswith(NIFTI_SUFFIXES)


def is_image_name(name: str) -> bool:
    """An image file name: a known suffix in any letter case, not hidden (``.x``, macOS ``._x`` metadata files)."""
    return not name.startswith(".") and bool(suffix_of(name))


def is_image_file(path: Path) -> bool:
    return is_image_name(path.name) and path.is_file()


def memory_budget() -> int:
    """Bytes one volume may take while it is read and resampled: ``MEDSEG_MEMORY_GB``, else half of the RAM."""
    env = os.environ.get("MEDSEG_MEMORY_GB")
    if env:
        try:
            return int(float(env) * 2**30)
        except ValueError:
            raise ValueError(f"MEDSEG_MEMORY_GB={env!r} is not a number of gigabytes") from None
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


@dataclass(frozen=True)
class ImageInfo:
    """What an image header declares (nothing was allocated to learn it)."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    dtype: np.dtype
    declared_bytes: int

    @property
    def voxels(self) -> int:
        return int(np.prod([int(s) for s in self.shape], dtype=object))

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along the first three array axes (mm)."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def inspect_image(path: str | Path, budget: int | None = None) -> ImageInfo:
    """The header of an image, checked before anything is allocated.

    Raises:
        ImageError: unknown suffix, unreadable header, complex / vector / RGB voxels, a declared size the file cannot
            hold, or a volume larger than ``budget`` bytes (default :func:`memory_budget`) once converted to float32.
    """
    path = Path(path)
    if not path.is_file() and is_dicom_ref(path):  # a DICOM series folder (medseg.data.dicom)
        shape, affine, _ = read_series(str(path), header_only=True)
        info = ImageInfo(path, shape, affine, np.dtype(np.float32), int(np.prod(shape, dtype=object)) * 4)
        _check_budget(info, budget)  # the files hold what they hold: the series reader checked them
        return info
    if not suffix_of(path.name):
        raise ImageError(f"{path}: not a medical image file (expected {', '.join(IMAGE_SUFFIXES)})")
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        info = _nifti_info(path) if is_nifti(path.name) else _itk_info(path)
    except ImageError:
        raise
    except Exception as err:  # noqa: BLE001 - every header problem becomes one clear line
        raise ImageError(f"{path}: cannot read the image header ({type(err).__name__}: {_one_line(err)})") from err
    _check_dtype(info)
    _check_size(info, budget)
    return info


def _one_line(err: BaseException) -> str:
    """The first meaningful line of a reader's message (SimpleITK's are multi-line C++ traces)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if line.lower().startswith(("description:", "itk::error", "exception")) and ":" in line:
            return line.split(":", 1)[1].strip()[:300]
    return (lines[-1] if lines else type(err).__name__)[:300]


def _nifti_info(path: Path) -> ImageInfo:
    img: Any = nib.load(str(path))
    header = img.header
    shape = tuple(int(s) for s in img.shape)
    dtype = header.get_data_dtype()
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return ImageInfo(path, shape, np.asarray(img.affine, dtype=np.float64), dtype, declared)


_SITK_DTYPES = {
    "8-bit unsigned integer": np.uint8,
    "8-bit signed integer": np.int8,
    "16-bit unsigned integer": np.uint16,
    "16-bit signed integer": np.int16,
    "32-bit unsigned integer": np.uint32,
    "32-bit signed integer": np.int32,
    "64-bit unsigned integer": np.uint64,
    "64-bit signed integer": np.int64,
    "32-bit float": np.float32,
    "64-bit float": np.float64,
}


def _itk_info(path: Path) -> ImageInfo:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = tuple(int(s) for s in reader.GetSize())
    kind = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    components = int(reader.GetNumberOfComponents())
    if components != 1 or kind not in _SITK_DTYPES:
        what = "complex" if "complex" in kind else f"{components}-component" if components != 1 else kind
        raise ImageError(f"{path}: unsupported voxel type {kind!r} ({what}); medseg needs one real value per voxel")
    dtype = np.dtype(_SITK_DTYPES[kind])
    declared = int(np.prod(size, dtype=object)) * dtype.itemsize
    return ImageInfo(path, size, itk_affine(reader), dtype, declared)


def itk_affine(reader: Any) -> np.ndarray:
    """Voxel → RAS+ affine of an ITK image (or reader): ITK's LPS direction/spacing/origin converted."""
    n = len(reader.GetSize())
    spacing = np.asarray(reader.GetSpacing(), dtype=np.float64)
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(n, n)
    affine = np.eye(4)
    affine[:n, :n] = direction[:3, :3] * spacing[None, :3] if n > 3 else direction * spacing[None, :]
    affine[:n, 3] = np.asarray(reader.GetOrigin(), dtype=np.float64)[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS


def _check_dtype(info: ImageInfo) -> None:
    kind = info.dtype.kind
    if kind == "c":
        raise ImageError(
            f"{info.path}: complex-valued voxels ({info.dtype}); medseg needs real intensities (take the magnitude)"
        )
    if kind not in "biuf":
        raise ImageError(f"{info.path}: unsupported voxel type {info.dtype} (RGB/vector voxels); one real value each")


def _data_bytes_available(path: Path) -> tuple[int, bool]:
    """``(bytes the voxel data can come from, compressed?)``: the file itself, or a detached data file."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return path.stat().st_size, name.endswith(".gz")
    head = path.read_bytes()[:16384].decode("latin-1", "replace")
    compressed = bool(
        re.search(r"^CompressedData\s*=\s*True", head, re.IGNORECASE | re.MULTILINE)
        or re.search(r"^encoding\s*:\s*(gz|gzip|bz2|bzip2)\b", head, re.IGNORECASE | re.MULTILINE)
    )
    match = re.search(r"^(?:ElementDataFile\s*=|data ?file\s*:)\s*(\S+)", head, re.IGNORECASE | re.MULTILINE)
    if match and match.group(1).upper() not in ("LOCAL", "LIST"):
        data = path.parent / match.group(1)
        return (data.stat().st_size if data.is_file() else 0), compressed or data.name.lower().endswith(".gz")
    if match and match.group(1).upper() == "LIST":
        return 2**62, compressed  # one file per slice: sizes are checked by the reader
    return path.stat().st_size, compressed


def _check_size(info: ImageInfo, budget: int | None) -> None:
    held, compressed = _data_bytes_available(info.path)
    limit = held * MAX_EXPANSION if compressed else held
    if info.declared_bytes > limit:
        raise ImageError(
            f"{info.path}: the header declares {info.shape} voxels ({gib(info.declared_bytes)}), more than a "
            f"{held}-byte file can hold (a truncated, damaged or hostile header)"
        )
    _check_budget(info, budget)


def _check_budget(info: ImageInfo, budget: int | None) -> None:
    budget = memory_budget() if budget is None else budget
    need = info.voxels * 4 * WORKING_COPIES
    if need > budget:
        raise ImageError(
            f"{info.path}: {info.shape} voxels need about {gib(need)} of memory to read and resample, more than the "
            f"budget of {gib(budget)} (MEDSEG_MEMORY_GB raises it)"
        )


def read_volume(path: str | Path, header_only: bool = False) -> tuple[tuple[int, ...], np.ndarray, np.ndarray | None]:
    """Read ``(shape, affine_ras, data)`` of an image after :func:`inspect_image`; ``data`` is None with
    ``header_only``.

    The affine maps voxel indices to RAS+ world millimetres for every format (ITK's LPS is converted). A DICOM
    series folder is read by :func:`medseg.data.dicom.read_series`. Raises :class:`ImageError` (an ``OSError``)
    with the file name when the file cannot or must not be read.
    """
    path = Path(path)
    info = inspect_image(path)
    if not path.is_file() and is_dicom_ref(path):
        return read_series(str(path), header_only)
    if header_only:
        return info.shape, info.affine, None
    try:
        if is_nifti(path.name):
            img: Any = nib.load(str(path))
            return info.shape, info.affine, np.asanyarray(img.dataobj)
        import SimpleITK as sitk

        n = len(info.shape)
        data = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(tuple(range(n))[::-1])
        return info.shape, info.affine, data
    except Exception as err:  # noqa: BLE001 - every reader error becomes one clear message
        raise ImageError(f"{path}: cannot read image ({type(err).__name__}: {_one_line(err)})") from err


def ras_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing along the R, A, S axes after reorientation to RAS (what ``Orientationd`` gives)."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ornt = nib.orientations.io_orientation(affine)
    out = np.empty(3)
    for vox_axis, (world_axis, _) in enumerate(ornt):
        out[int(world_axis)] = zooms[vox_axis]
    return out
