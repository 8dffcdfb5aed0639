"""Synthetic Turbolift task family modelled on CT → CBCT → CBCT-TST liver segmentation (see docs/turbolift.md).

Abdomen-like volumes (world millimetres, random grids): an elliptic body with fat rim, a liver (label 1) in the
right upper abdomen, spleen, kidneys and stomach of liver-like or near-liver intensity (unlabelled distractors), a
bright spine and dark bowel gas. Stages add cone-beam artefacts on top of the same anatomy model:

- ``ct``: clean, low noise, calibrated intensities, many cases;
- ``cbct``: streaks radiating from bone/gas, cupping (a radial low-frequency bias), 2× noise, truncated field of
  view, uncalibrated intensity scale/offset, fewer cases;
- ``cbct_tst``: the same artefacts stronger, plus blur along z (motion) and lower contrast of the liver, fewest cases.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.data.synthetic import _ellipsoid, random_affine, save_nifti, world_grid

STAGES = {
    "ct": {"cases": 16, "noise": 0.04, "streaks": 0.0, "cupping": 0.0, "fov": 1.0, "blur": 0.0, "contrast": 1.0},
    "cbct": {"cases": 10, "noise": 0.12, "streaks": 0.12, "cupping": 0.25, "fov": 0.85, "blur": 0.0, "contrast": 0.7},
    "cbct_tst": {"cases": 6, "noise": 0.2, "streaks": 0.25, "cupping": 0.4, "fov": 0.75, "blur": 1.5, "contrast": 0.45},
}


def _anatomy(xyz: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clean intensity image (≈ soft tissue 1.0, fat 0.6, bone 2.0, gas 0) and the liver mask."""
    x, y = xyz[0], xyz[1]
    body = _ellipsoid(xyz, np.array([0.0, 0.0, 0.0]), np.array([rng.uniform(140, 160), rng.uniform(100, 115), 1e4]))
    inner = _ellipsoid(xyz, np.zeros(3), np.array([130.0, 90.0, 1e4]) * rng.uniform(0.9, 1.0))
    image = np.where(body < 1, 0.6, 0.0) + np.where(inner < 1, 0.4, 0.0)
    liver_c = np.array([rng.uniform(-75, -55), rng.uniform(-10, 15), rng.uniform(-10, 10)])
    liver = _ellipsoid(xyz, liver_c, np.array([rng.uniform(45, 60), rng.uniform(45, 60), rng.uniform(50, 70)]))
    cut = (x - liver_c[0]) * 0.6 + (y - liver_c[1]) > rng.uniform(20, 35)  # a wedge off the liver: not an ellipsoid
    liver_mask = (liver < 1) & ~cut & (inner < 1)
    organs = [  # spleen, kidneys, stomach: liver-like intensities, unlabelled
        (np.array([rng.uniform(60, 80), rng.uniform(20, 40), 0.0]), np.array([25.0, 35.0, 40.0]), 1.15),
        (np.array([-45.0, 45.0, rng.uniform(-30, -10)]), np.array([22.0, 20.0, 35.0]), 1.25),
        (np.array([45.0, 45.0, rng.uniform(-30, -10)]), np.array([22.0, 20.0, 35.0]), 1.25),
        (np.array([rng.uniform(20, 40), rng.uniform(-40, -20), 10.0]), np.array([35.0, 25.0, 30.0]), 0.85),
    ]
    for centre, radii, value in organs:
        image = np.where(_ellipsoid(xyz, centre, radii) < 1, value, image)
    image = np.where(liver_mask, 1.35, image)
    spine = (x**2 + (y - 70) ** 2) < 15**2
    image = np.where(spine & (body < 1), 2.0, image)
    for _ in range(3):  # bowel gas
        c = np.array([rng.uniform(-20, 60), rng.uniform(-60, 0), rng.uniform(-40, 40)])
        image = np.where(_ellipsoid(xyz, c, np.full(3, rng.uniform(6, 12))) < 1, 0.0, image)
    return image.astype(np.float32), liver_mask.astype(np.uint8)


def _artefacts(image: np.ndarray, xyz: np.ndarray, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Cone-beam-like artefacts in world space: contrast loss, cupping, streaks, truncated FOV, noise, z blur."""
    x, y = xyz[0], xyz[1]
    r = np.sqrt(x**2 + y**2) / 150.0
    soft = np.clip(image, 0.9, 1.4)
    image = image + (p["contrast"] - 1.0) * (soft - 1.0)  # liver/organ contrast shrinks towards soft tissue
    image = image * (1.0 - p["cupping"] * (1.0 - r**2).clip(0, 1))
    if p["streaks"]:
        angle = np.arctan2(y, x)
        for _ in range(6):
            theta = rng.uniform(0, np.pi)
            image = image + p["streaks"] * rng.normal() * np.cos(angle - theta) ** 40 * (r > 0.05)
    image = np.where(r < p["fov"], image, 0.0)
    image = image + rng.normal(0, p["noise"], image.shape)
    if p["blur"]:
        image = ndimage.gaussian_filter(image, sigma=(0, 0, p["blur"]))
    if p["fov"] < 1.0:  # uncalibrated CBCT intensities
        image = image * rng.uniform(0.7, 1.3) + rng.uniform(-0.3, 0.3)
    return image.astype(np.float32)


def synth_abdomen(rng: np.random.Generator, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case of ``stage``: (image, liver label, affine); grids ~300×300×120 mm at 4–5 mm."""
    params = STAGES[stage]
    affine, _ = random_affine(rng, 1.0, (1.0, 1.0))  # orientation only; the grid is set below
    world_spacing = np.array([rng.uniform(3.8, 4.4), rng.uniform(3.8, 4.4), rng.uniform(4.5, 5.5)])
    direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    world_axis = np.abs(direction).argmax(axis=0)  # the world axis each voxel axis runs along
    spacing = world_spacing[world_axis]
    shape = tuple(int(round(f / s)) for f, s in zip(np.array([320.0, 320.0, 120.0])[world_axis], spacing, strict=True))
    affine[:3, :3] = direction * spacing[None, :]
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    xyz = world_grid(affine, shape)
    image, label = _anatomy(xyz, rng)
    return _artefacts(image, xyz, params, rng), label, affine


def make_stage_dataset(root: str | Path, stage: str, seed: int = 0, n_cases: int | None = None) -> Path:
    """Generate one stage's MSD dataset once (atomic: temp folder renamed into place)."""
    root = Path(root).expanduser()
    if (root / "dataset.json").is_file():
        return root
    if stage not in STAGES:
        raise ValueError(f"unknown Turbolift demo stage {stage!r}; choose from {sorted(STAGES)}")
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "imagesTr").mkdir(parents=True)
    (tmp / "labelsTr").mkdir()
    rng = np.random.default_rng(seed + 1000 * list(STAGES).index(stage))
    training = []
    for i in range(int(n_cases or STAGES[stage]["cases"])):
        image, label, affine = synth_abdomen(rng, stage)
        name = f"{stage}_{i:03d}.nii.gz"
        save_nifti(tmp / "imagesTr" / name, image, affine)
        save_nifti(tmp / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": f"turbolift-demo-{stage}",
        "modality": {"0": "CT" if stage == "ct" else "CBCT"},
        "labels": {"0": "background", "1": "liver"},
        "numTraining": len(training),
        "training": training,
    }
    (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, root)
    return root
