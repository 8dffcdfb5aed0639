#!/usr/bin/env python
"""Write a synthetic anisotropic MRI-like dataset (MSD layout): fine in-plane, coarse slices, thin structures.

Each case is sampled on an axial grid of about 0.7 × 0.7 mm in-plane and 4 mm between slices (jittered per case:
in-plane 0.6-0.8 mm, slices 3.4-4.6 mm, and a few cases at 2.5 mm slices, so the planner's 10th-percentile rule has
something to do), like a prostate or knee MRI. The anatomy, drawn in world millimetres:

* a body (soft ellipsoid) with a smooth multiplicative bias field and Rician-like noise;
* label 1, a flat "gland": an ellipsoid of in-plane radii 16-26 mm and half-thickness 9-13 mm along z (5-7 slices),
  rotated in-plane, with a textured interior;
* label 2, two to four thin "lesions" inside it: discs of in-plane radius 3-6 mm and half-thickness 2.5-4 mm
  (one or two slices), brighter or darker than the gland.

Labels are rendered at 4× supersampling along z and taken by majority, so that partial-volume slices are labelled as a
scanner's radiologist would. Output: ``OUT/imagesTr/aniso_XXX.nii.gz``, ``OUT/labelsTr/aniso_XXX.nii.gz`` and
``OUT/dataset.json`` (written to a temporary folder and renamed into place).

Example:
    python scripts/make_anisotropic.py --out data/aniso --cases 24 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medseg.data.synthetic import write_msd_dataset

LABELS = {"0": "background", "1": "gland", "2": "lesion"}


def _rot(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _inside(xyz: np.ndarray, centre: np.ndarray, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Normalised radius (< 1 inside) of a rotated ellipsoid at world points ``xyz`` (3, ...)."""
    local = np.einsum("ji,j...->i...", rot, xyz - centre.reshape(3, *[1] * (xyz.ndim - 1)))
    return np.sqrt(((local / radii.reshape(3, *[1] * (xyz.ndim - 1))) ** 2).sum(0))


def make_case(rng: np.random.Generator, fov: tuple[float, float, float] = (84.0, 84.0, 60.0)):
    """One case: ``(image float32 (X, Y, Z), label uint8, affine)`` on an axial anisotropic grid."""
    inplane = rng.uniform(0.6, 0.8)
    thick = rng.uniform(3.4, 4.6) if rng.random() > 0.15 else 2.5
    spacing = np.array([inplane, inplane, thick])
    shape = tuple(int(round(f / s)) for f, s in zip(fov, spacing, strict=True))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2
    sub = 4  # supersampling along z for the labels
    idx = np.meshgrid(
        np.arange(shape[0], dtype=np.float32),
        np.arange(shape[1], dtype=np.float32),
        (np.arange(shape[2] * sub, dtype=np.float32) - (sub - 1) / 2) / sub,
        indexing="ij",
    )
    xyz = np.einsum("ij,j...->i...", affine[:3, :3].astype(np.float32), np.stack(idx)) + affine[:3, 3, None, None, None]
    body = _inside(xyz, rng.uniform(-3, 3, 3), np.array([38.0, 34.0, 60.0]) * rng.uniform(0.95, 1.05), np.eye(3))
    g_centre = np.array([*rng.uniform(-8, 8, 2), rng.uniform(-6, 6)])
    g_radii = np.array([rng.uniform(16, 26), rng.uniform(14, 22), rng.uniform(9, 13)])
    g_rot = _rot(rng.uniform(0, np.pi))
    gland = _inside(xyz, g_centre, g_radii, g_rot)
    label = np.zeros(xyz.shape[1:], np.uint8)
    label[gland < 1] = 1
    image = 0.3 / (1 + np.exp((body - 1) * 20)) + 0.25 / (1 + np.exp((gland - 1) * 8))
    for _ in range(rng.integers(2, 5)):
        direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.3])
        centre = g_centre + direction / np.linalg.norm(direction) * rng.uniform(0, 0.6) * g_radii
        radii = np.array([rng.uniform(3, 6), rng.uniform(3, 6), rng.uniform(2.5, 4.0)])
        lesion = _inside(xyz, centre, radii, _rot(rng.uniform(0, np.pi)))
        label[(lesion < 1) & (gland < 1)] = 2
        image += rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.2) / (1 + np.exp((lesion - 1) * 10)) * (gland < 1.05)
    # the scanner averages the slab (partial volume); labels take the majority of the supersampled slab
    image = image.reshape(*shape, sub).mean(-1)
    onehot = np.stack([(label == c) for c in range(3)]).reshape(3, *shape, sub).sum(-1)
    label = onehot.argmax(0).astype(np.uint8)
    texture = rng.normal(0, 1, shape)
    texture = np.real(np.fft.ifftn(np.fft.fftn(texture) * _lowpass(shape, spacing, 3.0)))
    image = image * (1 + 0.08 * texture / (texture.std() + 1e-8))
    centre_grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    bias = 1 + 0.2 * np.einsum("i,i...->...", rng.normal(size=3), centre_grid)
    image = image * bias * rng.uniform(0.7, 1.4)
    noise = rng.uniform(0.03, 0.06)
    image = np.sqrt((image + rng.normal(0, noise, shape)) ** 2 + rng.normal(0, noise, shape) ** 2)
    return (image * 1000).astype(np.float32), label, affine


def _lowpass(shape: tuple[int, ...], spacing: np.ndarray, sigma_mm: float) -> np.ndarray:
    freqs = np.meshgrid(*[np.fft.fftfreq(n, d=s) for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    return np.exp(-2 * (np.pi * sigma_mm) ** 2 * sum(f**2 for f in freqs))


def write_dataset(out: Path, cases: int, seed: int, force: bool = False) -> Path:
    """Write ``cases`` cases into ``out`` (MSD layout), atomically; an existing dataset is kept unless ``force``."""
    if (out / "dataset.json").is_file() and not force:
        return out
    meta = {
        "name": "aniso-synthetic",
        "description": "Synthetic anisotropic MRI-like volumes (0.7 x 0.7 x 4 mm): flat gland with thin lesions",
        "modality": {"0": "MRI"},
        "labels": LABELS,
    }
    return write_msd_dataset(out, meta, (_case(seed, i) for i in range(cases)))


def _case(seed: int, i: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    image, label, affine = make_case(np.random.default_rng([seed, i]))
    name = f"aniso_{i:03d}.nii.gz"
    print(f"  {name}: shape={image.shape} spacing={np.round(np.diag(affine)[:3], 2).tolist()} "
          f"voxels(gland, lesion)={[(label == c).sum() for c in (1, 2)]}")  # fmt: skip
    return name, image, label, affine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="dataset folder to write (MSD layout)")
    parser.add_argument("--cases", type=int, default=24, help="number of cases (default 24)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset")
    args = parser.parse_args(argv)
    write_dataset(args.out.expanduser(), args.cases, args.seed, args.force)
    print(f"wrote {args.cases} cases to {args.out}")


if __name__ == "__main__":
    main()
