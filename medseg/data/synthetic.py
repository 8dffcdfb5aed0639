"""Built-in synthetic demo data, written as real NIfTI files in MSD layout (same loading path as user data).

Each case is a noisy, bias-field-corrupted 3D volume of a body with an organ (label 1) and a lesion inside it
(label 2), drawn in world millimetres and sampled on a random grid: anisotropic spacing, flipped/permuted axes and
small oblique rotations, so the demo exercises reorientation and resampling like real scans.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

DEMO_LABELS = {"0": "background", "1": "organ", "2": "lesion"}


def random_affine(
    rng: np.random.Generator, fov_mm: float, spacing_range: tuple[float, float]
) -> tuple[np.ndarray, tuple]:
    """A random voxel→world affine centred on the origin (permuted/flipped axes, small obliquity) and its shape."""
    spacing = rng.uniform(*spacing_range, size=3)
    shape = tuple(int(round(fov_mm / s)) for s in spacing)
    perm = rng.permutation(3) if rng.random() < 0.5 else np.arange(3)
    signs = rng.choice([-1.0, 1.0], size=3) if rng.random() < 0.5 else np.ones(3)
    axes = np.eye(3)[:, perm] * signs
    angle = np.deg2rad(rng.uniform(-12, 12)) if rng.random() < 0.5 else 0.0
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ axes @ np.diag(spacing)
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    return affine, shape


def world_grid(affine: np.ndarray, shape: tuple) -> np.ndarray:
    """World coordinates (3, *shape) of every voxel centre."""
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    return np.einsum("ij,j...->i...", affine[:3, :3].astype(np.float32), idx) + affine[:3, 3, None, None, None]


def _ellipsoid(xyz: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Signed 'radius' field: < 1 inside the ellipsoid."""
    return np.sqrt((((xyz - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0))


Ellipsoid = tuple[np.ndarray, np.ndarray]  # (centre mm, radii mm)


def render_phantom(
    xyz: np.ndarray, body: Ellipsoid, organ: Ellipsoid, lesion: Ellipsoid
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free body/organ/lesion intensities (soft edges) and the label map (organ 1, lesion 2) at world points
    ``xyz`` (3, *shape) — the same object on any grid."""
    fields = [_ellipsoid(xyz, np.asarray(c, float), np.asarray(r, float)) for c, r in (body, organ, lesion)]
    label = np.zeros(xyz.shape[1:], np.uint8)
    label[fields[1] < 1] = 1
    label[fields[2] < 1] = 2
    soft = [1.0 / (1.0 + np.exp((f - 1.0) * 12.0)) for f in fields]
    return 0.25 * soft[0] + 0.45 * soft[1] + 0.5 * soft[2], label


def synth_case(
    rng: np.random.Generator, fov_mm: float = 96.0, spacing_range: tuple[float, float] = (1.2, 2.2), noise: float = 0.12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One demo case: ``(image float32, label uint8, affine)``."""
    affine, shape = random_affine(rng, fov_mm, spacing_range)
    xyz = world_grid(affine, shape)
    body = (rng.uniform(-3, 3, 3), rng.uniform(38, 44, 3))
    organ_c = rng.uniform(-10, 10, 3)
    organ = (organ_c, rng.uniform(16, 24, 3))
    lesion = (organ_c + rng.uniform(-6, 6, 3), np.full(3, rng.uniform(8, 11)))
    image, label = render_phantom(xyz, body, organ, lesion)
    bias = 1.0 + 0.15 * np.einsum("i,i...->...", rng.normal(size=3), xyz / fov_mm)
    image = image * bias * rng.uniform(0.8, 1.25) + rng.normal(0, noise, shape)
    return image.astype(np.float32), label, affine


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write NIfTI with qform and sform both set (code 1, scanner)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_msd_dataset(
    root: Path, meta: dict[str, Any], cases: Iterable[tuple[str, np.ndarray, np.ndarray, np.ndarray]]
) -> Path:
    """Write ``(file name, image, label, affine)`` cases and ``dataset.json`` (``meta`` + the training list) in MSD
    layout into ``root``, atomically: a temp folder renamed into place (an existing ``root`` is replaced)."""
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "imagesTr").mkdir(parents=True)
    (tmp / "labelsTr").mkdir()
    training = []
    for name, image, label, affine in cases:
        save_nifti(tmp / "imagesTr" / name, image, affine)
        save_nifti(tmp / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {**meta, "numTraining": len(training), "file_ending": ".nii.gz", "training": training}
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def make_demo_dataset(root: str | Path, n_cases: int = 16, seed: int = 0, force: bool = False) -> Path:
    """Generate the demo dataset once into ``root`` (atomically: a temp folder renamed into place)."""
    root = Path(root).expanduser()
    if (root / "dataset.json").is_file() and not force:
        return root
    rng = np.random.default_rng(seed)
    meta = {
        "name": "medseg-demo",
        "description": "Synthetic body/organ/lesion volumes with noise, bias field and varied geometry",
        "modality": {"0": "MRI"},
        "labels": DEMO_LABELS,
    }
    return write_msd_dataset(root, meta, ((f"demo_{i:03d}.nii.gz", *synth_case(rng)) for i in range(n_cases)))
