"""MONAI transform pipelines shared by training, validation and prediction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai import transforms as T

KEYS = ("image", "label")
CROP_MARGIN = 2  # voxels kept around the non-zero region


def intensity_stats(samples: Sequence[np.ndarray]) -> dict[str, float]:
    """nnU-Net CT statistics over foreground samples: 0.5/99.5 percentiles, mean and std (after clipping)."""
    values = np.concatenate([s.ravel() for s in samples]).astype(np.float64)
    lo, hi = np.percentile(values, [0.5, 99.5])
    clipped = np.clip(values, lo, hi)
    return {"lo": float(lo), "hi": float(hi), "mean": float(clipped.mean()), "std": float(clipped.std() + 1e-8)}


def _normalise(modality: str, stats: dict[str, float] | None) -> T.Transform:
    if modality == "CT":
        if stats is None:
            raise ValueError("CT normalisation needs dataset intensity statistics")
        lo, hi, mean, std = stats["lo"], stats["hi"], stats["mean"], stats["std"]
        return T.ScaleIntensityRanged("image", lo, hi, (lo - mean) / std, (hi - mean) / std, clip=True)
    return T.NormalizeIntensityd("image", channel_wise=True)


def preprocess_geometry(
    spacing: Sequence[float], keys: Sequence[str] = KEYS, crop_foreground: bool = True
) -> list[T.Transform]:
    """Deterministic geometry: load → channel first → float32 → RAS → resample → crop to non-zero.

    The expensive part (decoding, resampling); it depends on the files, the spacing and the crop settings only
    (:func:`geometry_settings`), never on intensity statistics. ``data.cache=disk`` stores it (see :func:`disk_cached`).
    """
    modes = ["bilinear", "nearest"][: len(keys)]
    out: list[T.Transform] = [
        T.LoadImaged(keys, ensure_channel_first=True, image_only=True),
        T.EnsureTyped(keys, dtype=np.float32),
        T.Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        T.Spacingd(keys, pixdim=tuple(spacing), mode=modes),
    ]
    if crop_foreground:
        out.append(
            T.CropForegroundd(keys, source_key="image", select_fn=_nonzero, allow_smaller=True, margin=CROP_MARGIN)
        )
    return out


def _nonzero(x: Any) -> Any:
    return x != 0


def geometry_settings(spacing: Sequence[float], keys: Sequence[str] = KEYS, crop_foreground: bool = True) -> dict:
    """Everything besides the input files that determines the output of :func:`preprocess_geometry` (cache key)."""
    return {
        "spacing": [float(s) for s in spacing],
        "keys": list(keys),
        "modes": ["bilinear", "nearest"][: len(keys)],
        "orientation": "RAS",
        "dtype": "float32",
        "crop_foreground": {"select": "nonzero", "margin": CROP_MARGIN} if crop_foreground else None,
    }


def disk_cached(spacing: Sequence[float], modality: str, keys: Sequence[str] = KEYS) -> tuple[int, dict[str, Any]]:
    """``(n, settings)``: the first ``n`` transforms of :func:`preprocess` that ``data.cache=disk`` stores, and
    everything besides the input files that determines their output (the cache key).

    That is the geometry, plus MRI's per-case z-score (it needs no dataset statistics). CT's clip + z-score uses
    statistics of the training cases, which differ between CV folds, so it runs on top of the cache (one cheap
    element-wise pass) and every fold shares the cached volumes.
    """
    settings = geometry_settings(spacing, keys)
    n = len(preprocess_geometry(spacing, keys))
    if modality != "CT":
        settings["normalise"] = "per-case z-score (NormalizeIntensityd, channel_wise)"
        n += 1
    return n, settings


def preprocess(
    spacing: Sequence[float],
    modality: str,
    stats: dict[str, float] | None,
    keys: Sequence[str] = KEYS,
    crop_foreground: bool = True,
    label_values: Sequence[int] | None = None,
) -> list[T.Transform]:
    """Deterministic part: load → channel first → RAS → resample → crop to non-zero → normalise (→ label values
    mapped to class indices 0..N−1 when ``label_values`` are not those already; ``medseg.data.labels``)."""
    out = [*preprocess_geometry(spacing, keys, crop_foreground), _normalise(modality, stats)]
    values = [int(v) for v in label_values or []]
    if "label" in keys and values and values != list(range(len(values))):
        out.append(T.MapLabelValued("label", orig_labels=values, target_labels=list(range(len(values)))))
    return out


def train_transforms(
    spacing: Sequence[float],
    modality: str,
    stats: dict[str, float] | None,
    patch: Sequence[int],
    samples_per_volume: int,
    pos_fraction: float,
    augment: dict[str, Any],
    label_values: Sequence[int] | None = None,
) -> T.Compose:
    """Preprocess, pad, foreground-oversampled patch sampling, then the augmentation of ``augment``
    (:mod:`medseg.data.augment`).

    A 2D patch is given as ``(H, W, 1)`` and squeezed to ``(H, W)`` after sampling. With rotation or scaling on, the
    sampler crops a larger region that the spatial augmentation turns into the patch.
    """
    from medseg.data.augment import augmentation

    is_2d = len(patch) == 3 and patch[-1] == 1
    net_patch = list(patch[:2]) if is_2d else list(patch)
    crop, augmenting = augmentation(augment, net_patch)
    crop3d = [*crop, 1] if is_2d else crop
    out = preprocess(spacing, modality, stats, label_values=label_values)
    out += [
        T.SpatialPadd(KEYS, spatial_size=tuple(patch)),
        T.RandCropByPosNegLabeld(
            KEYS,
            "label",
            tuple(crop3d),
            pos=pos_fraction,
            neg=1.0 - pos_fraction,
            num_samples=samples_per_volume,
            image_key="image",
            image_threshold=-np.inf,
            allow_smaller=True,
        ),
    ]
    if crop3d != list(patch):
        out.append(T.SpatialPadd(KEYS, spatial_size=tuple(crop3d)))  # a volume smaller than the crop
    if is_2d:
        out.append(T.SqueezeDimd(KEYS, dim=-1))
    out += augmenting
    out.append(T.EnsureTyped(KEYS, track_meta=False))
    return T.Compose(out)


def val_transforms(
    spacing: Sequence[float],
    modality: str,
    stats: dict[str, float] | None,
    label_values: Sequence[int] | None = None,
) -> T.Compose:
    """Preprocess whole volumes for validation (metrics in the resampled grid)."""
    steps = preprocess(spacing, modality, stats, label_values=label_values)
    return T.Compose([*steps, T.EnsureTyped(KEYS, track_meta=False)])
