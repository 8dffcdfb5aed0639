#!/usr/bin/env python
"""Build a small MSD-format brain-tissue dataset from the MNI152 template shipped inside the nilearn wheel.

The nilearn wheel (BSD licensed) bundles the ICBM 2009a nonlinear symmetric MNI152 template at 1 mm:

* ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz`` (skull-stripped T1, uint8 0-255)
* ``nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz`` (grey-matter probability, 0-255)
* ``nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz`` (white-matter probability, 0-255)

The wheel is fetched with ``pip download`` (it is never installed) and the files are read straight out of the zip.
The wheel has no CSF map and no brain mask, so they are derived:

* Brain mask: a ``mni_icbm152_*mask*`` file if the wheel has one, otherwise the rule of nilearn's
  ``load_mni152_brain_mask``: ``T1 / max(T1) > 0.2`` (``--brain-threshold``), with holes filled.
* CSF probability: the ``mni_icbm152_csf_*`` map if present, otherwise ``clip(1 - GM - WM, 0, 1)`` inside the brain
  mask (the GM and WM posteriors of the template sum to at most 1, the remainder is CSF).

Label rule: inside the brain mask, ``label = 1 + argmax(CSF, GM, WM)`` where the winning probability is above
``--prob-threshold`` (0.2); everything else is 0. Classes: 0 background, 1 CSF, 2 GM, 3 WM. Tissue probability
outside the brain mask (a thin rim of GM where the T1 is zero) is dropped so that labels match the image.

From this single 1 mm template, ``--cases`` re-gridded cases are made. Each case gets (seeded by ``--seed`` and the
case index): a rigid rotation of the voxel grid (uniform within +-``--max-rotation`` degrees per axis), a voxel
spacing drawn per axis from ``--spacings`` (anisotropic allowed), a small random shift of the grid origin
(+-``--max-shift`` mm per axis), a field of view cropped to the brain bounding box in the rotated frame plus
``--margin`` mm, a smooth multiplicative bias field (1 + quadratic polynomial in the normalised grid coordinates),
an intensity scale (x0.7-1.4), an offset (0-25) and Gaussian noise (1-4 % of the template maximum). The image is
resampled with linear interpolation and the labels with nearest neighbour (``scipy.ndimage.map_coordinates``).
The world (RAS mm) position of the anatomy is unchanged: the new affine maps new voxel indices to MNI world
coordinates, and the original template is sampled at ``inv(template_affine) @ new_affine @ index``. The affine is
stored as both qform and sform (code 1). Images are float32, labels uint8.
Because thin sulcal CSF cannot be represented at 2-3 mm, mapping a case back onto the 1 mm template grid (nearest
neighbour) agrees with the template labels to a Dice of about 0.9 for GM/WM but only about 0.6 for CSF; at 1 mm
spacing without rotation the round trip is exact.

Output (MSD layout): ``OUT/imagesTr/mni_XXX.nii.gz``, ``OUT/labelsTr/mni_XXX.nii.gz`` and ``OUT/dataset.json``.
The dataset is written to a temporary folder beside ``OUT`` and renamed into place at the end; a non-empty ``OUT``
is only replaced with ``--force``.

Example:
    python scripts/prepare_mni152.py --out data/mni152_tissue --cases 8 --seed 0
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

DEFAULT_NILEARN_VERSION = "0.14.1"
DATA_PREFIX = "nilearn/datasets/data/"
TEMPLATE_RE = re.compile(r"^nilearn/datasets/data/mni_icbm152_.*\.nii(\.gz)?$")
LABELS = {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show option defaults and keep the module docstring's line breaks in ``--help``."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The parsed arguments.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/mni152_tissue"), help="output dataset folder (MSD layout)")
    p.add_argument("--cases", type=int, default=8, help="number of re-gridded cases to generate")
    p.add_argument("--seed", type=int, default=0, help="random seed (case i uses the seed sequence [seed, i])")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output folder")
    p.add_argument("--wheel", type=Path, default=None, help="use this already downloaded nilearn wheel (no pip)")
    p.add_argument("--nilearn-version", default=DEFAULT_NILEARN_VERSION, help="nilearn version to download")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep the downloaded wheel here and reuse it on later runs (None: a temporary folder, deleted after use)",
    )
    p.add_argument(
        "--spacings",
        type=float,
        nargs="+",
        default=[1.5, 2.0, 2.5, 3.0],
        help="voxel spacings (mm) to draw from, independently per axis",
    )
    p.add_argument("--max-rotation", type=float, default=15.0, help="max absolute rotation per axis (degrees)")
    p.add_argument("--max-shift", type=float, default=4.0, help="max absolute grid-origin shift per axis (mm)")
    p.add_argument("--margin", type=float, default=10.0, help="margin around the brain bounding box (mm)")
    p.add_argument("--prob-threshold", type=float, default=0.2, help="min winning tissue probability for a label")
    p.add_argument(
        "--brain-threshold",
        type=float,
        default=0.2,
        help="brain mask threshold on T1/max(T1) when the wheel has no mask",
    )
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error("--cases must be >= 1")
    if args.margin <= args.max_shift:
        p.error("--margin must be larger than --max-shift so that the brain stays in the field of view")
    if min(args.spacings) <= 0:
        p.error("--spacings must be positive")
    return args


def download_wheel(version: str, dest: Path) -> Path:
    """Download the nilearn wheel with pip (no install, no dependencies).

    Args:
        version: nilearn version to fetch.
        dest: Folder the wheel is saved in; an existing matching wheel there is reused.

    Returns:
        Path of the wheel file.

    Raises:
        RuntimeError: If pip fails or no wheel appears.
    """
    pattern = f"nilearn-{version}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"nilearn=={version}",
        "-d",
        str(dest),
    ]
    print("running:", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"pip download failed (rc={res.returncode}); use --wheel PATH instead.\n{res.stderr}")
    found = sorted(dest.glob(pattern))
    if not found:
        raise RuntimeError(f"pip reported success but no {pattern} in {dest}")
    return found[0]


def _pick(names: list[str], kind: str) -> str | None:
    """Return the first template file name whose kind tag (``_t1_``, ``_gm_``...) matches, or None."""
    hits = [n for n in names if f"_{kind}" in Path(n).name.lower()]
    return hits[0] if hits else None


def _load_member(zf: zipfile.ZipFile, name: str) -> nib.Nifti1Image:
    """Load a NIfTI file stored in the zip without unpacking it to disk."""
    raw = zf.read(name)
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return nib.Nifti1Image.from_bytes(raw)


def read_template(wheel: Path) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, str]]:
    """Read the MNI152 T1, tissue maps and (if any) brain mask out of the wheel.

    Args:
        wheel: Path to the nilearn wheel.

    Returns:
        Arrays keyed ``t1``, ``gm``, ``wm`` and optionally ``csf``/``mask`` (probabilities scaled to [0, 1]),
        the template affine, and the wheel member names used.

    Raises:
        RuntimeError: If the T1, GM or WM map is missing or the grids differ.
    """
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if TEMPLATE_RE.match(n))
        print(f"MNI152 files in {wheel.name}:", *[f"  {n}" for n in names], sep="\n")
        picked = {k: _pick(names, k) for k in ("t1", "gm", "wm", "csf", "mask")}
        picked = {k: v for k, v in picked.items() if v is not None}
        if not {"t1", "gm", "wm"} <= picked.keys():
            raise RuntimeError(f"T1/GM/WM maps not all found in {wheel}: {names}")
        imgs = {k: _load_member(zf, v) for k, v in picked.items()}
    affine = imgs["t1"].affine
    arrays = {}
    for key, img in imgs.items():
        if img.shape != imgs["t1"].shape or not np.allclose(img.affine, affine, atol=1e-4):
            raise RuntimeError(f"{picked[key]} is not on the T1 grid")
        data = np.asarray(img.dataobj, dtype=np.float32)
        if key in ("gm", "wm", "csf") and data.max() > 1.5:
            data /= 255.0 if data.max() <= 255.0 else float(data.max())
        arrays[key] = data
    return arrays, affine, picked


def build_labels(arrays: dict[str, np.ndarray], prob_threshold: float, brain_threshold: float) -> np.ndarray:
    """Build the 4-class tissue label map (0 background, 1 CSF, 2 GM, 3 WM).

    Args:
        arrays: Template arrays from :func:`read_template`.
        prob_threshold: Minimum winning tissue probability for a non-background label.
        brain_threshold: Threshold on ``T1 / max(T1)`` for the brain mask when no mask map exists.

    Returns:
        uint8 label volume on the template grid.
    """
    t1, gm, wm = arrays["t1"], arrays["gm"], arrays["wm"]
    if "mask" in arrays:
        brain = arrays["mask"] > 0.5 * arrays["mask"].max()
    else:
        brain = ndimage.binary_fill_holes(t1 / t1.max() > brain_threshold)
    csf = arrays["csf"] if "csf" in arrays else np.clip(1.0 - gm - wm, 0.0, 1.0)
    probs = np.stack([csf, gm, wm])
    labels = (np.argmax(probs, axis=0) + 1).astype(np.uint8)
    labels[~brain | (probs.max(axis=0) <= prob_threshold)] = 0
    return labels


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """Return ``Rz @ Ry @ Rx`` for rotation angles (degrees) about x, y and z."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def brain_points(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Return world (RAS mm) coordinates, shape (N, 3), of all labelled voxels."""
    ijk = np.argwhere(labels > 0).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def case_grid(
    points: np.ndarray, rot: np.ndarray, spacing: np.ndarray, shift: np.ndarray, margin: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Make a rotated, cropped voxel grid covering the brain.

    Args:
        points: World coordinates of the brain voxels, shape (N, 3).
        rot: 3x3 rotation (columns are the new voxel axes in world space).
        spacing: Voxel size (mm) per new axis.
        shift: Grid-origin shift (mm) along the new axes, smaller than ``margin``.
        margin: Margin (mm) added around the brain extent in the rotated frame.

    Returns:
        The 4x4 affine mapping new voxel indices to world coordinates, and the grid shape.
    """
    centre = points.mean(axis=0)
    local = (points - centre) @ rot  # coordinates along the new axes
    lo = local.min(axis=0) - margin
    hi = local.max(axis=0) + margin
    shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = centre + rot @ (lo + shift)
    return affine, shape


def resample(
    volume: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, shape: tuple[int, ...], order: int
) -> np.ndarray:
    """Resample ``volume`` onto a new grid, sampling it at ``inv(src_affine) @ dst_affine @ index``.

    Args:
        volume: Source volume.
        src_affine: Source voxel-to-world affine.
        dst_affine: Destination voxel-to-world affine.
        shape: Destination grid shape.
        order: Spline order (0 nearest, 1 linear); points outside the source read 0.

    Returns:
        The resampled volume (same dtype as ``volume``).
    """
    mat = np.linalg.inv(src_affine) @ dst_affine
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    coords = mat[:3, :3].astype(np.float32) @ ijk + mat[:3, 3:4].astype(np.float32)
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0, prefilter=False)
    return out.reshape(shape)


def bias_field(shape: tuple[int, ...], coeffs: np.ndarray) -> np.ndarray:
    """Return a smooth multiplicative field ``1 + quadratic polynomial`` on normalised coords, clipped to [0.6, 1.4].

    Args:
        shape: Grid shape.
        coeffs: Nine coefficients for x, y, z, x^2, y^2, z^2, xy, xz, yz (coordinates in [-1, 1]).

    Returns:
        float32 field of the given shape.
    """
    x, y, z = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    field = 1.0 + sum(float(c) * t for c, t in zip(coeffs, terms, strict=True))
    return np.clip(field, 0.6, 1.4).astype(np.float32)


def draw_params(rng: np.random.Generator, args: argparse.Namespace) -> dict:
    """Draw the random geometry and intensity parameters of one case.

    Args:
        rng: Random generator of this case.
        args: Parsed command-line arguments.

    Returns:
        JSON-serialisable parameter dict.
    """
    return {
        "rotation_deg": rng.uniform(-args.max_rotation, args.max_rotation, 3).round(3).tolist(),
        "spacing_mm": [float(s) for s in rng.choice(args.spacings, 3)],
        "shift_mm": rng.uniform(-args.max_shift, args.max_shift, 3).round(3).tolist(),
        "scale": round(float(rng.uniform(0.7, 1.4)), 4),
        "offset": round(float(rng.uniform(0.0, 25.0)), 3),
        "bias_coeffs": rng.uniform(-0.1, 0.1, 9).round(4).tolist(),
        "noise_std_frac": round(float(rng.uniform(0.01, 0.04)), 4),
        "noise_seed": int(rng.integers(2**31)),
    }


def make_case(
    t1: np.ndarray, labels: np.ndarray, affine: np.ndarray, points: np.ndarray, params: dict, margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-grid the template for one case and apply the intensity changes.

    Args:
        t1: Template T1 (float32).
        labels: Template label map (uint8).
        affine: Template affine.
        points: World coordinates of brain voxels (for cropping).
        params: Parameters from :func:`draw_params`.
        margin: Field-of-view margin (mm).

    Returns:
        float32 image, uint8 labels and the case affine.
    """
    rot = rotation_matrix(np.asarray(params["rotation_deg"]))
    new_affine, shape = case_grid(points, rot, np.asarray(params["spacing_mm"]), np.asarray(params["shift_mm"]), margin)
    image = resample(t1, affine, new_affine, shape, order=1)
    seg = resample(labels, affine, new_affine, shape, order=0).astype(np.uint8)
    image *= bias_field(shape, np.asarray(params["bias_coeffs"]))
    image = image * params["scale"] + params["offset"]
    noise_rng = np.random.default_rng(params["noise_seed"])
    sigma = params["noise_std_frac"] * float(t1.max()) * params["scale"]
    image += noise_rng.normal(0.0, sigma, shape).astype(np.float32)
    return image.astype(np.float32), seg, new_affine


def save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a volume with qform and sform both set to ``affine`` (code 1, units mm)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def dataset_json(n_cases: int, picked: dict[str, str], wheel_name: str, generation: dict) -> dict:
    """Return the MSD ``dataset.json`` content."""
    cases = [f"mni_{i:03d}" for i in range(n_cases)]
    return {
        "name": "MNI152Tissue",
        "description": (
            "Brain tissue (CSF/GM/WM) segmentation on randomly re-gridded copies of the ICBM 2009a "
            "nonlinear symmetric MNI152 template, extracted from " + wheel_name
        ),
        "reference": "Fonov et al., NeuroImage 2011; template files as shipped in the nilearn wheel",
        "licence": "MNI ICBM152 template licence (free use with attribution); nilearn BSD-3-Clause",
        "tensorImageSize": "3D",
        "modality": {"0": "MRI"},
        "labels": dict(LABELS),
        "numTraining": n_cases,
        "numTest": 0,
        "file_ending": ".nii.gz",
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": [],
        "source_files": picked,
        "generation": generation,
    }


def write_dataset(
    tmp: Path, arrays: dict[str, np.ndarray], labels: np.ndarray, affine: np.ndarray, args: argparse.Namespace
) -> list[dict]:
    """Generate all cases into ``tmp`` and print one summary line per case.

    Args:
        tmp: Empty folder to write ``imagesTr``/``labelsTr`` into.
        arrays: Template arrays.
        labels: Template label map.
        affine: Template affine.
        args: Parsed command-line arguments.

    Returns:
        Per-case parameter dicts (with shapes and label counts added).
    """
    (tmp / "imagesTr").mkdir()
    (tmp / "labelsTr").mkdir()
    points = brain_points(labels, affine)
    records = []
    for i in range(args.cases):
        params = draw_params(np.random.default_rng([args.seed, i]), args)
        image, seg, case_affine = make_case(arrays["t1"], labels, affine, points, params, args.margin)
        save_nifti(image, case_affine, tmp / "imagesTr" / f"mni_{i:03d}.nii.gz")
        save_nifti(seg, case_affine, tmp / "labelsTr" / f"mni_{i:03d}.nii.gz")
        counts = np.bincount(seg.ravel(), minlength=4).tolist()
        params.update(case=f"mni_{i:03d}", shape=list(seg.shape), label_voxels=counts)
        records.append(params)
        print(
            f"  mni_{i:03d}: shape={tuple(seg.shape)} spacing={tuple(params['spacing_mm'])} "
            f"rot={tuple(params['rotation_deg'])} labels(bg,CSF,GM,WM)={counts}",
            flush=True,
        )
    return records


def commit_output(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an existing one (already checked) last."""
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes the folder private (0700)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{time.time_ns()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def load_template(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, str], str]:
    """Get the wheel (``--wheel``, ``--cache-dir`` or a temporary download) and read the template from it.

    Args:
        args: Parsed command-line arguments.

    Returns:
        Template arrays, template affine, wheel member names used and the wheel file name.
    """
    if args.wheel is not None:
        if not args.wheel.is_file():
            raise SystemExit(f"--wheel {args.wheel} does not exist")
        return (*read_template(args.wheel), args.wheel.name)
    if args.cache_dir is not None:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        wheel = download_wheel(args.nilearn_version, args.cache_dir)
        return (*read_template(wheel), wheel.name)
    with tempfile.TemporaryDirectory(prefix="medseg-nilearn-") as dl_dir:
        wheel = download_wheel(args.nilearn_version, Path(dl_dir))
        return (*read_template(wheel), wheel.name)


def main(argv: list[str] | None = None) -> int:
    """Run the script.

    Args:
        argv: Command-line arguments without the program name.

    Returns:
        Process exit code.
    """
    args = parse_args(argv)
    start = time.perf_counter()
    out = args.out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        print(f"{out} exists and is not empty; use --force to replace it", file=sys.stderr)
        return 1
    arrays, affine, picked, wheel_name = load_template(args)
    labels = build_labels(arrays, args.prob_threshold, args.brain_threshold)
    print(f"template {arrays['t1'].shape}, labels(bg,CSF,GM,WM)={np.bincount(labels.ravel(), minlength=4).tolist()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        records = write_dataset(tmp, arrays, labels, affine, args)
        generation = {
            "seed": args.seed,
            "nilearn_wheel": wheel_name,
            "template_shape": list(labels.shape),
            "margin_mm": args.margin,
            "prob_threshold": args.prob_threshold,
            "cases": records,
        }
        meta = dataset_json(args.cases, {k: Path(v).name for k, v in picked.items()}, wheel_name, generation)
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        commit_output(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {args.cases} cases to {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
