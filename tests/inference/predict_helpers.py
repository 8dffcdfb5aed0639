"""Helpers of the inference tests: affines with any axis order/obliquity, and a world-space phantom on any grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.data import synthetic


def make_affine(
    spacing: tuple[float, float, float],
    axes: str = "RAS",
    rotation_deg: float = 0.0,
    rotation_axis: tuple[float, float, float] = (0.0, 0.0, 1.0),
    fov_mm: float = 56.0,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Voxel → RAS affine whose voxel axes point along ``axes`` (e.g. ``LPS``, ``PIR``), rotated about a world axis,
    with the grid centred on the origin; and the shape covering ``fov_mm``."""
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    cols = np.zeros((3, 3))
    assert sorted(directions[c][0] for c in axes) == [0, 1, 2], f"{axes}: not one code per world axis"
    for v, code in enumerate(axes):
        world, sign = directions[code]
        cols[world, v] = sign
    k = np.asarray(rotation_axis, float) / np.linalg.norm(rotation_axis)
    t = np.deg2rad(rotation_deg)
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(t) * skew + (1 - np.cos(t)) * skew @ skew
    shape = tuple(int(round(fov_mm / s)) for s in spacing)
    affine = np.eye(4)
    affine[:3, :3] = rot @ cols @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    return affine, shape  # type: ignore[return-value]


def render_phantom(affine: np.ndarray, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same world-space body/organ/lesion object (like ``synth_case``'s) sampled on any grid: (image, label)."""
    xyz = synthetic.world_grid(affine, shape)
    body = (np.array([1.0, -2.0, 0.5]), np.array([40.0, 36.0, 42.0]))
    organ = (np.array([5.0, -5.0, 3.0]), np.array([19.0, 15.0, 17.0]))
    lesion = (np.array([10.0, -3.0, -1.0]), np.array([9.0, 9.0, 9.0]))
    image, label = synthetic.render_phantom(xyz, body, organ, lesion)
    image = image + np.random.default_rng(seed).normal(0, 0.05, shape)
    return image.astype(np.float32), label


def save_with_codes(path: Path, data: np.ndarray, affine: np.ndarray, qcode: int = 1, scode: int = 1) -> None:
    """NIfTI with the given qform/sform codes (0 leaves that form unset)."""
    img = nib.Nifti1Image(data, None)
    img.set_qform(affine if qcode else None, code=qcode)
    img.set_sform(affine if scode else None, code=scode)
    nib.save(img, str(path))


def save_itk(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write (x, y, z) ``data`` with a RAS ``affine`` as an ITK image (.nrrd/.mha): LPS origin/spacing/direction."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.sqrt((lps**2).sum(axis=0))
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps / spacing).ravel()])
    img.SetOrigin([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]])
    sitk.WriteImage(img, str(path))


def resample_nearest(
    labels: np.ndarray, affine: np.ndarray, target_affine: np.ndarray, target_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` (on ``affine``'s grid) at the voxel centres of the target grid by nearest neighbour, and the mask of
    target voxels that fall inside the source grid."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in target_shape], indexing="ij")).reshape(3, -1)
    xform = np.linalg.solve(affine, target_affine)
    src = np.rint(xform[:3, :3] @ idx + xform[:3, 3:]).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.asarray(labels.shape)[:, None]), axis=0)
    out = np.zeros(idx.shape[1], labels.dtype)
    out[inside] = labels[tuple(src[:, inside])]
    return out.reshape(target_shape), inside.reshape(target_shape)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
