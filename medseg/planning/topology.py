"""nnU-Net's planning rules as pure functions: target spacing, pooling strides and kernel sizes per level, patch.

Axes are in the data's RAS order (x, y, z after ``Orientationd``), which is also the network's spatial axis order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ANISOTROPY = 3.0  # an axis this much coarser than the others is "anisotropic" (nnU-Net's threshold)


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """nnU-Net's full-resolution target spacing and the reason: the median spacing, except that an axis more than 3×
    coarser than the others (in spacing, and with 3× fewer voxels) takes the 10th percentile of its spacings (not
    finer than the other axes), so that the few thin-slice cases are not thrown away.

    Args:
        spacings: (cases, 3) voxel spacings in mm.
        shapes: (cases, 3) shapes after cropping to the non-zero region.
    """
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(shapes * spacings / target, 50, axis=0)  # median shape at the median spacing
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY * max(target[a] for a in others)
    aniso_voxels = size[worst] * ANISOTROPY < min(size[a] for a in others)
    if not (aniso_spacing and aniso_voxels):
        return [float(s) for s in target], "median spacing of the cases"
    p10 = float(np.percentile(spacings[:, worst], 10))
    coarse = max(p10, max(float(target[a]) for a in others) + 1e-5)
    median = float(target[worst])
    target[worst] = coarse
    axis = "xyz"[worst] if len(target) == 3 else str(worst)
    why = (
        f"median spacing; the {axis} axis is > {ANISOTROPY:g}x coarser than the others (median {median:g} mm): "
        f"its 10th percentile {coarse:.4g} mm (nnU-Net's rule)"
    )
    return [float(s) for s in target], why


def median_shape(spacings: np.ndarray, shapes: np.ndarray, spacing: Sequence[float]) -> list[float]:
    """Median shape (voxels) of the cropped cases after resampling to ``spacing``."""
    return [float(s) for s in np.median(shapes * spacings / np.asarray(spacing, float), axis=0)]


@dataclass
class Topology:
    """Levels of a U-Net: ``strides[i]`` pools below level ``i``; ``kernels[i]`` is level ``i``'s conv kernel.

    Attributes:
        strides: ``depth`` per-axis strides (1 or 2).
        kernels: ``depth + 1`` per-axis kernel sizes (1 or 3).
        divisor: what each patch axis must be divisible by (the product of the strides along it).
    """

    strides: list[list[int]]
    kernels: list[list[int]]

    @property
    def depth(self) -> int:
        return len(self.strides)

    @property
    def divisor(self) -> list[int]:
        return [int(np.prod([s[a] for s in self.strides])) if self.strides else 1 for a in range(len(self.kernels[0]))]


def pool_and_kernels(
    spacing: Sequence[float],
    patch: Sequence[int],
    min_feature_map: int = 4,
    max_depth: int = 6,
    depth: int | None = None,
    exact: bool = False,
) -> Topology:
    """nnU-Net's ``get_pool_and_conv_props``: pool (×2) the axes whose spacing is within 2× of the finest one while
    they stay at least ``2 × min_feature_map`` voxels (a lone axis ``3 ×``); an axis gets 3-wide kernels once its
    spacing is within 2× of the finest, 1-wide (in-plane kernels) before; the bottleneck always has 3-wide kernels.

    Args:
        spacing: target spacing per axis.
        patch: patch size per axis (voxels).
        min_feature_map: smallest size an axis is pooled down to.
        max_depth: at most this many poolings.
        depth: exactly this many poolings (a fixed ``model.net.channels``); when the rule stops earlier, the
            remaining levels pool the largest axes that can still be halved, else do not pool.
        exact: pool an axis only while its size is even (a patch you set: the levels must divide it as it is).
    """
    dims = len(spacing)
    cur_spacing, cur_size = [float(s) for s in spacing], [float(p) for p in patch]
    strides: list[list[int]] = []
    kernels: list[list[int]] = []
    kernel = [1] * dims
    limit = max_depth if depth is None else depth
    while len(strides) < limit:
        valid = [a for a in range(dims) if cur_size[a] >= 2 * min_feature_map and not (exact and cur_size[a] % 2)]
        if valid:
            finest = min(cur_spacing[a] for a in valid)
            valid = [a for a in valid if cur_spacing[a] / finest < 2]
        if len(valid) == 1 and cur_size[valid[0]] < 3 * min_feature_map:
            valid = []
        if not valid:
            if depth is None:
                break
            valid = [a for a in range(dims) if cur_size[a] >= 2 and not (exact and cur_size[a] % 2)]
        for a in range(dims):
            if kernel[a] != 3 and cur_spacing[a] / min(cur_spacing) < 2:
                kernel[a] = 3
        stride = [2 if a in valid else 1 for a in range(dims)]
        for a in valid:
            cur_spacing[a] *= 2
            cur_size[a] = float(np.ceil(cur_size[a] / 2))
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dims)
    return Topology(strides, kernels)


def initial_patch(spacing: Sequence[float], shape: Sequence[float], voxels: float) -> list[int]:
    """A patch of about ``voxels`` voxels whose physical aspect is isotropic (fine axes get more voxels), clipped to
    the median shape (nnU-Net starts from 256³ voxels on 3D and 2048² on 2D)."""
    inv = 1.0 / np.asarray(spacing, float)
    patch = inv * (voxels / np.prod(inv)) ** (1.0 / len(inv))
    return [int(round(min(p, s))) for p, s in zip(patch, shape, strict=True)]


def round_patch(patch: Sequence[float], divisor: Sequence[int]) -> list[int]:
    """Each axis rounded up to a multiple of its divisor."""
    return [int(np.ceil(p / d) * d) for p, d in zip(patch, divisor, strict=True)]


def shrink_axis(patch: Sequence[int], shape: Sequence[float]) -> int:
    """The axis nnU-Net shrinks next: the largest patch / median-shape ratio."""
    return int(np.argmax([p / max(s, 1.0) for p, s in zip(patch, shape, strict=True)]))


def anisotropy(spacing: Sequence[float]) -> float:
    """Coarsest / finest spacing."""
    return float(max(spacing) / min(spacing))
