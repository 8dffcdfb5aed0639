"""The dataset fingerprint: what ``medseg plan`` learns from the data before choosing a configuration (nnU-Net's).

Per case (read once, then cached by the files' path, size and modification time under ``<cache_dir>/fingerprints/``):
spacing and shape in RAS axis order, the shape after cropping to the non-zero region, the voxels of every class and a
seeded sample of the foreground intensities of every channel. Over the dataset: median and 10th-percentile spacing,
median shape after the crop, per-channel intensity percentiles of the foreground, class voxel frequencies, and the
channel names and normalisation from ``dataset.json``.

A 4D image (``imagesTr/BRATS_001.nii.gz`` holding the channels in its 4th dimension, MSD's layout) counts as one
case with as many channels as its 4th dimension has.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medseg.data.cache import digest, file_fingerprint
from medseg.data.discovery import DatasetError, DatasetSpec
from medseg.data.io import ras_spacing, read_volume
from medseg.fileio import atomic_path

FINGERPRINT_VERSION = 1  # bump when what a case entry holds changes
SAMPLES_PER_CASE = 10000
PERCENTILES = (0.5, 50.0, 99.5)


def channel_stack(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(image (C, X, Y, Z), affine)`` of a case: one 3D file per channel, or one 4D file with the channels last."""
    arrays, affine = [], None
    for path in paths:
        _, aff, data = read_volume(path)
        assert data is not None
        affine = aff if affine is None else affine
        data = np.asarray(data)
        arrays += [data[..., c] for c in range(data.shape[3])] if data.ndim == 4 else [data]
    assert affine is not None
    return np.stack(arrays), affine


def _ras_order(values: list[int] | np.ndarray, affine: np.ndarray) -> list[int]:
    """Per-voxel-axis ``values`` reordered to the R, A, S axes (what ``Orientationd`` gives)."""
    ornt = nib.orientations.io_orientation(affine)
    out = [0, 0, 0]
    for vox_axis, (world_axis, _) in enumerate(ornt[:3]):
        out[int(world_axis)] = int(values[vox_axis])
    return out


def case_fingerprint(case: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Read one case and measure it (arrays, so that an entry is one ``.npz``)."""
    image, affine = channel_stack([str(p) for p in case["image"]])
    _, _, label = read_volume(str(case["label"]))
    assert label is not None
    label = np.asarray(label)
    if label.shape != image.shape[1:]:
        raise ValueError(f"label shape {label.shape} != image shape {image.shape[1:]}")
    nonzero = np.any(image != 0, axis=0)
    if nonzero.any():
        idx = [np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        crop = [int(i[-1] - i[0] + 1) for i in idx]
    else:
        crop = list(image.shape[1:])
    values, counts = np.unique(np.rint(label).astype(np.int64), return_counts=True)
    fg = label > 0
    rng = np.random.default_rng([seed, len(str(case["id"])), *map(ord, str(case["id"])[:32])])
    n_fg = int(fg.sum())
    pick = rng.choice(n_fg, min(n_fg, SAMPLES_PER_CASE), replace=False) if n_fg else np.zeros(0, np.int64)
    samples = np.stack([image[c][fg][pick] for c in range(image.shape[0])]).astype(np.float32)
    return {
        "spacing": ras_spacing(affine).astype(np.float64),
        "shape": np.asarray(_ras_order(list(image.shape[1:]), affine), np.int64),
        "crop_shape": np.asarray(_ras_order(crop, affine), np.int64),
        "classes": np.stack([values, counts]).astype(np.int64),
        "samples": samples,
    }


def cached_case_fingerprint(case: dict[str, Any], cache_dir: Path | None) -> dict[str, np.ndarray]:
    """:func:`case_fingerprint`, read from ``cache_dir/fingerprints/`` when the case's files have not changed."""
    if cache_dir is None:
        return case_fingerprint(case)
    files = [*case["image"], case["label"]]
    key = digest([FINGERPRINT_VERSION, case["id"], [file_fingerprint(f) for f in files]], 24)
    path = Path(cache_dir) / "fingerprints" / f"{key}.npz"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile), np.load(path) as z:
            return {k: z[k] for k in ("spacing", "shape", "crop_shape", "classes", "samples")}
    entry = case_fingerprint(case)
    with contextlib.suppress(OSError), atomic_path(path, suffix=".npz") as tmp:  # a read-only cache costs a re-read
        np.savez(tmp, **entry)  # type: ignore[arg-type]  # numpy's stubs type **kwds as allow_pickle
    return entry


def dataset_fingerprint(spec: DatasetSpec, cache_dir: Path | None = None) -> dict[str, Any]:
    """Fingerprint every training case of ``spec`` (cached per case); one ``DatasetError`` naming every case that
    cannot be read (``medseg check-data`` lists the details)."""
    entries, problems = {}, []
    for case in spec.cases:
        if case.get("label") is None:
            problems.append(f"{case['id']}: no label")
            continue
        try:
            entries[case["id"]] = cached_case_fingerprint(case, cache_dir)
        except (OSError, ValueError) as err:
            problems.append(f"{case['id']}: {' '.join(str(err).split())[:300]}")
    if problems or not entries:
        listed = "\n".join(f"  - {p}" for p in problems) or "  - no training cases"
        raise DatasetError(
            f"data.root={spec.root}: cannot fingerprint the dataset:\n{listed}\n"
            f"`medseg check-data data.root={spec.root}` lists every problem"
        )
    return summarise(spec, entries)


def summarise(spec: DatasetSpec, entries: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The dataset-level fingerprint (plain JSON values) from the per-case entries."""
    spacings = np.stack([e["spacing"] for e in entries.values()])
    crops = np.stack([e["crop_shape"] for e in entries.values()]).astype(np.float64)
    n_channels = {int(e["samples"].shape[0]) for e in entries.values()}
    if len(n_channels) != 1:
        raise DatasetError(f"data.root={spec.root}: cases have different channel counts {sorted(n_channels)}")
    channels = []
    names = list(spec.channels)
    for c in range(n_channels.pop()):
        values = np.concatenate([e["samples"][c] for e in entries.values()]).astype(np.float64)
        name = names[c] if c < len(names) else f"channel_{c}"
        stats: dict[str, Any] = {"name": name, "normalisation": "CT" if name.strip().upper() == "CT" else "z-score"}
        if values.size:
            lo, med, hi = np.percentile(values, PERCENTILES)
            stats.update(p00_5=float(lo), p50=float(med), p99_5=float(hi), mean=float(values.mean()))
            stats["std"] = float(values.std())
        channels.append(stats)
    totals: dict[int, list[int]] = {}
    for e in entries.values():
        for value, count in e["classes"].T:
            t = totals.setdefault(int(value), [0, 0])
            t[0], t[1] = t[0] + int(count), t[1] + 1
    all_voxels = sum(t[0] for t in totals.values())
    classes = {
        str(v): {"name": spec.labels.get(v, f"class_{v}"), "voxels": t[0], "fraction": t[0] / all_voxels, "cases": t[1]}
        for v, t in sorted(totals.items())
    }
    return {
        "version": FINGERPRINT_VERSION,
        "root": str(spec.root),
        "layout": spec.layout,
        "cases": len(entries),
        "spacings": spacings.round(6).tolist(),
        "shapes_after_crop": crops.astype(int).tolist(),
        "median_spacing": np.median(spacings, 0).round(6).tolist(),
        "median_shape_after_crop": np.median(crops, 0).tolist(),
        "median_size_mm": np.median(crops * spacings, 0).round(3).tolist(),
        "channels": channels,
        "classes": classes,
    }
