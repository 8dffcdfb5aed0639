"""Sliding-window prediction of a whole volume in slabs, with the stitched logits of only one slab in memory.

MONAI's ``sliding_window_inference`` allocates the stitched output (K channels) plus a count map for the whole
volume. Here the volume is cut along one axis into slabs; each slab is predicted by the same
``sliding_window_inference`` call on a sub-volume made of whole windows of the *global* window grid, so every voxel of
the slab's final region receives exactly the windows (same positions, same Gaussian weights, same order) that a
whole-volume call would give it: the result equals the whole-volume result. A window that straddles two slabs is run
twice, so slabs are only used when the whole volume's logits would not fit the memory budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference

SOFTMAX_CHUNK = 16  # planes along the first spatial axis per in-place softmax step


@dataclass(frozen=True)
class Slab:
    """Voxels ``[lo, hi)`` along the slab axis are final, predicted from the sub-volume ``[sub_lo, sub_hi)``."""

    lo: int
    hi: int
    sub_lo: int
    sub_hi: int


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start positions of MONAI's sliding windows along one axis (as ``sliding_window_inference`` places them)."""
    size = max(size, roi)  # MONAI pads a smaller image up to the window
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    return sorted({s[0].start for s in dense_patch_slices((size,), (roi,), (interval,))})


def plan_slabs(size: int, roi: int, overlap: float, max_len: int) -> list[Slab]:
    """Cut ``[0, size)`` into slabs whose sub-volumes are at most ``max_len`` long (at least one window each).

    Falls back to one slab when the windows of a sub-volume would not coincide with the global ones.
    """
    whole = [Slab(0, size, 0, size)]
    if size <= roi or max_len >= size:
        return whole
    starts = window_starts(size, roi, overlap)
    slabs: list[Slab] = []
    lo = 0
    while lo < size:
        first = min(p for p in starts if p + roi > lo)
        # candidate ends: the next window starts after lo, and the volume end
        ends = [p for p in starts if p > lo] + [size]
        best = None
        for hi in ends:
            needed = [p for p in starts if p < hi and p + roi > lo]
            sub = Slab(lo, hi, first, max(needed) + roi)
            if best is not None and sub.sub_hi - sub.sub_lo > max_len:
                break
            best = sub
        assert best is not None
        local = [p - best.sub_lo for p in starts if best.sub_lo <= p and p + roi <= best.sub_hi]
        if window_starts(best.sub_hi - best.sub_lo, roi, overlap) != local:
            return whole
        slabs.append(best)
        lo = best.hi
    return slabs


def predict_slabs(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    axis: int,
    slabs: list[Slab],
    consume: Callable[[slice, torch.Tensor], None],
) -> None:
    """Run ``predict`` (a whole-volume sliding-window predictor) on each slab's sub-volume of ``image`` (1, C, *S)
    and hand ``consume(region, out)`` the final region along spatial ``axis``: out is (1, K, *S) cut to the region."""
    dim = axis + 2
    for slab in slabs:
        sub = image.narrow(dim, slab.sub_lo, slab.sub_hi - slab.sub_lo)
        out = predict(sub)
        consume(slice(slab.lo, slab.hi), out.narrow(dim, slab.lo - slab.sub_lo, slab.hi - slab.lo))
        del out


@torch.no_grad()
def sliding_softmax(module: Any, image: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (1, K, *S) of ``image`` (1, C, *S) by the module's Gaussian sliding window.

    The same call as ``SegmentationModule.predict_volume`` (roi, sw batch size, overlap, ``mode="gaussian"``; a 2D
    network sees (N, C, H, W) slices), but the softmax overwrites the stitched logits a few planes at a time instead
    of allocating a second K-channel volume.
    """

    def window(x: torch.Tensor) -> torch.Tensor:
        if getattr(module, "is_2d", False):
            return module.net(x.squeeze(-1)).unsqueeze(-1)  # (N, C, H, W, 1) windows of a 2D network
        return module.net(x)

    logits = sliding_window_inference(
        image, module.roi_size, module.sw_batch_size, window, module.overlap, mode="gaussian"
    )
    assert isinstance(logits, torch.Tensor)
    logits = logits.float()
    for i in range(0, logits.shape[2], SOFTMAX_CHUNK):
        part = logits[:, :, i : i + SOFTMAX_CHUNK]
        part.copy_(torch.softmax(part, dim=1))
    return logits
