"""Training augmentation from ``data.augment`` (config group ``data/augment``: ``nnunet``, ``light``, ``none``).

Built from MONAI's transforms, in nnU-Net's order: spatial (rotation, scaling, optional elastic deformation) on a
larger crop so that rotated corners hold image rather than padding, then Gaussian noise, Gaussian blur, brightness
(multiplicative), contrast, low-resolution simulation, gamma (also on the inverted image); mirroring, which commutes
with them, runs before them (the order ``light`` always had). Every key is a
probability per sample (0 = off); ranges are separate keys. For an anisotropic patch (one axis more than 3× shorter
than the longest, e.g. 80 × 80 × 16) rotation is in-plane only, as nnU-Net's "dummy 2D" augmentation.

``light`` is medseg's first default: mirroring, 90° in-plane rotations, intensity scale/shift and noise.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as T
from monai.transforms import MapTransform, Randomizable

KEYS = ("image", "label")
DEFAULTS: dict[str, Any] = {
    "name": "custom",
    "flip": 0.0,  # mirroring, per axis
    "rotate90": 0.0,  # 90° in-plane rotations (square in-plane patches)
    "intensity": 0.0,  # light: scale and shift by up to ±10 %
    "noise": 0.0,
    "noise_std": 0.05,  # Gaussian noise std drawn from [0, noise_std]
    "rotate": 0.0,
    "rotate_deg": 30.0,  # ± per axis (in-plane only on anisotropic patches)
    "scale": 0.0,
    "scale_range": [0.7, 1.4],  # zoom of the sampling grid (> 1: zoom out)
    "elastic": 0.0,
    "blur": 0.0,
    "blur_sigma": [0.5, 1.0],
    "brightness": 0.0,
    "brightness_range": 0.25,  # × (1 ± 0.25)
    "contrast": 0.0,
    "contrast_range": 0.25,
    "lowres": 0.0,
    "lowres_zoom": [0.5, 1.0],
    "gamma": 0.0,
    "gamma_inverted": 0.0,
    "gamma_range": [0.7, 1.5],
}


def settings(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data.augment`` completed with the defaults; an unknown key is a ``ValueError`` naming it."""
    given = dict(augment or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"data.augment: unknown key(s) {unknown}; keys: {', '.join(sorted(DEFAULTS))}")
    return {**DEFAULTS, **given}


def spatial_margin(aug: Mapping[str, Any], patch: Sequence[int]) -> list[int]:
    """The crop that rotation and scaling sample from: large enough that the output patch holds no padding."""
    if aug["rotate"] <= 0 and aug["scale"] <= 0:
        return list(patch)
    angle = math.radians(aug["rotate_deg"]) if aug["rotate"] > 0 else 0.0
    zoom = max(aug["scale_range"]) if aug["scale"] > 0 else 1.0
    grow = (abs(math.cos(angle)) + abs(math.sin(angle))) * zoom
    planar = _anisotropic(patch)
    return [int(math.ceil(p * (1.0 if planar and a == len(patch) - 1 else grow))) for a, p in enumerate(patch)]


def _anisotropic(patch: Sequence[int]) -> bool:
    return len(patch) == 3 and max(patch) > 3 * min(patch)


class RandRotateScaled(Randomizable, MapTransform):
    """Rotation and scaling (each with its own probability) from a larger crop to the ``patch`` at its centre
    (MONAI ``Affine``: bilinear image, nearest label); a centre crop when neither is drawn.

    Args:
        patch: output spatial size.
        rotate: probability of a rotation by up to ± ``rotate_deg`` per axis (in-plane only when ``planar``).
        scale: probability of a zoom drawn from ``scale_range`` (the same on every axis).
        planar: rotate around the last (coarse) axis only.
    """

    def __init__(
        self,
        patch: Sequence[int],
        rotate: float,
        rotate_deg: float,
        scale: float,
        scale_range: Sequence[float],
        planar: bool = False,
    ) -> None:
        MapTransform.__init__(self, KEYS)
        self.patch, self.planar = [int(p) for p in patch], planar
        self.p_rotate, self.max_angle, self.p_scale = rotate, math.radians(rotate_deg), scale
        self.scale_range = (float(min(scale_range)), float(max(scale_range)))
        self.crop = T.CenterSpatialCropd(KEYS, self.patch)
        self.angles: list[float] = []
        self.zoom = 1.0

    def randomize(self, data: Any = None) -> None:
        dims = len(self.patch)
        n_angles = 1 if dims == 2 or self.planar else 3
        rotate = self.R.random() < self.p_rotate
        self.angles = [
            float(self.R.uniform(-self.max_angle, self.max_angle)) if rotate else 0.0 for _ in range(n_angles)
        ]
        if dims == 3 and self.planar:
            self.angles = [0.0, 0.0, self.angles[0]]
        self.zoom = float(self.R.uniform(*self.scale_range)) if self.R.random() < self.p_scale else 1.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        out = dict(data)
        if not any(self.angles) and self.zoom == 1.0:
            return self.crop(out)
        dims = len(self.patch)
        scale = [self.zoom] * dims
        if self.planar:
            scale[-1] = 1.0
        for key, mode in zip(KEYS, ("bilinear", "nearest"), strict=True):
            affine = T.Affine(
                rotate_params=self.angles, scale_params=scale, spatial_size=self.patch, mode=mode, padding_mode="zeros"
            )
            out[key] = affine(torch.as_tensor(out[key]))[0]
        return out


def augmentation(augment: Mapping[str, Any] | None, patch: Sequence[int]) -> tuple[list[int], list[T.Transform]]:
    """``(crop size, transforms)``: the patch sampler crops ``crop size`` (larger than ``patch`` when rotation or
    scaling is on), then ``transforms`` augment it to ``patch``. ``patch`` has 2 or 3 entries (the network's)."""
    aug = settings(augment)
    dims = len(patch)
    planar = _anisotropic(patch)
    out: list[T.Transform] = []
    crop = spatial_margin(aug, patch)
    if crop != list(patch):
        out.append(RandRotateScaled(patch, aug["rotate"], aug["rotate_deg"], aug["scale"], aug["scale_range"], planar))
    if aug["elastic"] > 0:  # nnU-Net v1's deformation: smooth displacement fields, sigma 9-13 voxels
        modes = ("bilinear", "nearest")
        if dims == 3:
            out.append(T.Rand3DElasticd(KEYS, (9, 13), (0, 200), prob=aug["elastic"], mode=modes))
        else:
            out.append(T.Rand2DElasticd(KEYS, (24, 24), (0, 2), prob=aug["elastic"], mode=modes))
    # mirroring before the intensity transforms (they commute): light's order, so its random draws are unchanged
    if aug["flip"] > 0:
        out += [T.RandFlipd(KEYS, prob=aug["flip"], spatial_axis=a) for a in range(dims)]
    if aug["rotate90"] > 0 and patch[0] == patch[1]:
        out.append(T.RandRotate90d(KEYS, prob=aug["rotate90"], spatial_axes=(0, 1)))
    out += _intensity(aug, dims, planar)
    return crop, out


def _intensity(aug: dict[str, Any], dims: int, planar: bool) -> list[T.Transform]:
    out: list[T.Transform] = []
    if aug["intensity"] > 0:
        p = aug["intensity"]
        out += [T.RandScaleIntensityd("image", 0.1, prob=p), T.RandShiftIntensityd("image", 0.1, prob=p)]
    if aug["noise"] > 0:
        out.append(T.RandGaussianNoised("image", prob=aug["noise"], std=aug["noise_std"]))
    if aug["blur"] > 0:
        sigma = _pair(aug["blur_sigma"])
        sigma_z = (0.0, 0.0) if planar else sigma
        out.append(T.RandGaussianSmoothd("image", sigma, sigma, sigma_z if dims == 3 else sigma, prob=aug["blur"]))
    if aug["brightness"] > 0:
        out.append(T.RandScaleIntensityd("image", aug["brightness_range"], prob=aug["brightness"]))
    if aug["contrast"] > 0:
        out.append(
            T.RandScaleIntensityFixedMeand("image", aug["contrast_range"], preserve_range=True, prob=aug["contrast"])
        )
    if aug["lowres"] > 0:
        up = "trilinear" if dims == 3 else "bilinear"
        zoom = _pair(aug["lowres_zoom"])
        out.append(T.RandSimulateLowResolutiond("image", prob=aug["lowres"], upsample_mode=up, zoom_range=zoom))
    gamma = _pair(aug["gamma_range"])
    if aug["gamma_inverted"] > 0:
        out.append(T.RandAdjustContrastd("image", aug["gamma_inverted"], gamma, invert_image=True, retain_stats=True))
    if aug["gamma"] > 0:
        out.append(T.RandAdjustContrastd("image", aug["gamma"], gamma, retain_stats=True))
    return out


def _pair(values: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    return low, high


def describe(augment: Mapping[str, Any] | None) -> str:
    """One line: the augmentations that are on, with their probabilities."""
    aug = settings(augment)
    on = [f"{k} {v:g}" for k, v in aug.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
          and k in ("flip", "rotate90", "intensity", "noise", "rotate", "scale", "elastic", "blur", "brightness",
                    "contrast", "lowres", "gamma", "gamma_inverted")]  # fmt: skip
    return f"{aug['name']}: " + (", ".join(on) or "none")
