"""Built-in synthetic demo data, written as real NIfTI files in MSD layout (same loading path as user data).

Each case is a noisy, bias-field-corrupted 3D volume of a body with an organ (label 1) and a lesion inside it
(label 2), drawn in world millimetres and sampled on a random grid: anisotropic spacing, flipped/permuted axes and
small oblique rotations, so the demo exercises reorientation and resampling like real scans.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

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


def synth_case(
    rng: np.random.Generator, fov_mm: float = 96.0, spacing_range: tuple[float, float] = (1.2, 2.2), noise: float = 0.12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One demo case: ``(image float32, label uint8, affine)``."""
    affine, shape = random_affine(rng, fov_mm, spacing_range)
    xyz = world_grid(affine, shape)
    body = _ellipsoid(xyz, rng.uniform(-3, 3, 3), rng.uniform(38, 44, 3))
    organ_c = rng.uniform(-10, 10, 3)
    organ = _ellipsoid(xyz, organ_c, rng.uniform(16, 24, 3))
    lesion_c = organ_c + rng.uniform(-6, 6, 3)
    lesion = _ellipsoid(xyz, lesion_c, np.full(3, rng.uniform(8, 11)))
    label = np.zeros(shape, np.uint8)
    label[organ < 1] = 1
    label[lesion < 1] = 2

    def soft(field: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp((field - 1.0) * 12.0))

    image = 0.25 * soft(body) + 0.45 * soft(organ) + 0.5 * soft(lesion)
    bias = 1.0 + 0.15 * np.einsum("i,i...->...", rng.normal(size=3), xyz / fov_mm)
    image = image * bias * rng.uniform(0.8, 1.25) + rng.normal(0, noise, shape)
    return image.astype(np.float32), label, affine


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write NIfTI with qform and sform both set (code 1, scanner)."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def make_demo_dataset(root: str | Path, n_cases: int = 16, seed: int = 0, force: bool = False) -> Path:
    """Generate the demo dataset once into ``root`` (atomically: a temp folder renamed into place)."""
    root = Path(root).expanduser()
    if (root / "dataset.json").is_file() and not force:
        return root
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "imagesTr").mkdir(parents=True)
    (tmp / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    training = []
    for i in range(n_cases):
        image, label, affine = synth_case(rng)
        name = f"demo_{i:03d}.nii.gz"
        save_nifti(tmp / "imagesTr" / name, image, affine)
        save_nifti(tmp / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "medseg-demo",
        "description": "Synthetic body/organ/lesion volumes with noise, bias field and varied geometry",
        "modality": {"0": "MRI"},
        "labels": DEMO_LABELS,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "training": training,
    }
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root
