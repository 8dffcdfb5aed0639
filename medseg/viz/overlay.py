"""Axial / coronal / sagittal overlays of a prediction (and a reference label) on its image, in RAS orientation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Patch

from medseg.data.io import read_volume
from medseg.viz._figure import new_figure, save_png

VIEWS = ("axial", "coronal", "sagittal")
FIXED_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the RAS axis a view's slice index runs along
# Radiological convention (as ITK-SNAP and 3D Slicer): patient right on the screen's left, anterior/superior up.
EDGES = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4",
    "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990", "#9a6324",
)  # fmt: skip


@dataclass
class OverlayData:
    """The slices an overlay shows.

    Attributes:
        centre: RAS voxel indices (R, A, S) of the sagittal, coronal and axial slices.
        spacing: voxel size in mm along R, A, S.
        shape: RAS shape of the volumes.
        classes: foreground label values found in the prediction or the label.
        views: view name → layer (``image``, ``prediction``, ``label``) → 2D array as displayed (row 0 on top).
        aspect: view name → displayed pixel height / width (mm per row / mm per column).
        window: grey-value display range of the image (0.5 and 99.5 % percentiles).
    """

    centre: tuple[int, int, int]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    classes: list[int]
    views: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    aspect: dict[str, float] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 1.0)


def _read(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data, affine)`` of a NIfTI/NRRD/MHA file as a 3D array (first channel of a 4D file)."""
    _, affine, data = read_volume(path)
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[..., None]
    elif data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 2D, 3D or 4D image, got shape {data.shape}")
    return data, affine


def _check_same_grid(ref: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray], names: str) -> None:
    if ref[0].shape != other[0].shape:
        raise ValueError(f"{names}: shapes differ ({ref[0].shape} vs {other[0].shape})")
    if not np.allclose(ref[1], other[1], atol=1e-3):
        raise ValueError(f"{names}: affines differ (not the same voxel grid)")


def to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient ``data`` to the closest RAS+ axes (as nibabel's ``as_closest_canonical``).

    Returns:
        The reoriented array and its voxel size in mm along R, A, S.
    """
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return np.ascontiguousarray(ras), np.sqrt((new_affine[:3, :3] ** 2).sum(axis=0))


def choose_centre(prediction: np.ndarray, label: np.ndarray | None = None) -> tuple[int, int, int]:
    """Slice indices through the foreground centre of mass of ``prediction`` (``label`` if it is empty).

    Where the centre's slice along an axis misses the foreground (a hollow or split object), the nearest slice that
    shows foreground is taken. Both empty: the middle slices.
    """
    for volume in (prediction, label):
        if volume is None or not (mask := volume > 0).any():
            continue
        centre = []
        for axis in range(3):
            counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
            idx = np.arange(len(counts))
            com = float((counts * idx).sum() / counts.sum())
            filled = idx[counts > 0]
            centre.append(int(filled[np.argmin(np.abs(filled - com))]))
        return centre[0], centre[1], centre[2]
    return prediction.shape[0] // 2, prediction.shape[1] // 2, prediction.shape[2] // 2


def _plane(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """The slice as displayed: first remaining RAS axis right-to-left, second one bottom-to-top."""
    return np.take(volume, index, axis=FIXED_AXIS[view]).T[::-1, ::-1]


def prepare_overlay(image: str | Path, prediction: str | Path, label: str | Path | None = None) -> OverlayData:
    """Read the files, check that they share one voxel grid, reorient to RAS and cut the three slices.

    Raises:
        ValueError: when the prediction's (or label's) shape or affine differs from the image's; names the files.
        OSError: when a file cannot be read.
    """
    img = _read(image)
    layers = {"image": img, "prediction": _read(prediction)}
    _check_same_grid(img, layers["prediction"], f"{prediction} does not match {image}")
    if label is not None:
        layers["label"] = _read(label)
        _check_same_grid(img, layers["label"], f"{label} does not match {image}")
    ras = {name: to_ras(*layer)[0] for name, layer in layers.items()}
    spacing = to_ras(*img)[1]
    centre = choose_centre(ras["prediction"], ras.get("label"))
    found = set(np.unique(ras["prediction"]).tolist())
    if "label" in ras:
        found |= set(np.unique(ras["label"]).tolist())
    data = OverlayData(
        centre=centre,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        shape=tuple(int(s) for s in ras["image"].shape),  # type: ignore[arg-type]
        classes=sorted(int(c) for c in found if c > 0),
    )
    for view in VIEWS:
        fixed = FIXED_AXIS[view]
        data.views[view] = {name: _plane(vol, view, centre[fixed]) for name, vol in ras.items()}
        cols, rows = (a for a in range(3) if a != fixed)
        data.aspect[view] = float(spacing[rows] / spacing[cols])
    data.window = _window(ras["image"])
    return data


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display range: the 0.5-99.5 % intensity percentiles (of a subsample of big volumes)."""
    step = max(1, round((image.size / 2e6) ** (1 / 3)))
    values = image[::step, ::step, ::step].astype(np.float64)
    values = values[np.isfinite(values)]
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5])) if values.size else (0.0, 1.0)
    return lo, hi if hi > lo else lo + 1.0


def save_overlay(
    image: str | Path,
    prediction: str | Path,
    out_png: str | Path,
    label: str | Path | None = None,
    title: str | None = None,
    class_names: Mapping[int, str] | None = None,
) -> Path:
    """Write a PNG of three orthogonal slices through the prediction's foreground, overlaid on the image.

    Columns are axial, coronal and sagittal slices in RAS orientation (radiological display: patient right on the
    left), with the aspect ratio of the voxel spacing. With ``label`` a first row shows the reference label, the
    second the prediction; classes have the same colour in both and a legend.

    Args:
        image: the image file (NIfTI, NRRD, MHA; the first channel of a 4D file).
        prediction: the label map predicted for it (same grid).
        out_png: the PNG to write (replaced atomically).
        label: an optional reference label map (same grid).
        title: figure title; default: the image's file name.
        class_names: label value → name for the legend; default ``class <value>``.

    Returns:
        The written PNG.

    Raises:
        ValueError: when shapes or affines differ (the message names the files).
    """
    data = prepare_overlay(image, prediction, label)
    rows = ["label", "prediction"] if label is not None else ["prediction"]
    colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(data.classes)}
    fig = new_figure(12, 4.0 * len(rows) + 0.8)
    axes = np.asarray(fig.subplots(len(rows), 3, squeeze=False))
    lo, hi = data.window
    for r, layer in enumerate(rows):
        for c, view in enumerate(VIEWS):
            planes = data.views[view]
            ax = axes[r, c]
            ax.imshow(planes["image"], cmap="gray", vmin=lo, vmax=hi, aspect=data.aspect[view])
            _draw_labels(ax, planes[layer], colors, data.aspect[view])
            _decorate(ax, view, data, layer if c == 0 else None, title=r == 0)
    names = dict(class_names or {})
    handles = [Patch(color=colors[c], label=names.get(c, f"class {c}")) for c in data.classes]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    fig.suptitle(title if title is not None else Path(image).name)
    return save_png(fig, out_png)


def _draw_labels(ax: Axes, plane: np.ndarray, colors: dict[int, str], aspect: float) -> None:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*plane.shape, 4))
    for value, color in colors.items():
        mask = plane == value
        if mask.any():
            rgba[mask] = to_rgba(color, alpha=0.4)
            if min(plane.shape) > 1:
                ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=0.9)
    ax.imshow(rgba, aspect=aspect, interpolation="nearest")


def _decorate(ax: Axes, view: str, data: OverlayData, row_name: str | None, title: bool) -> None:
    fixed = FIXED_AXIS[view]
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(f"{view}  (slice {data.centre[fixed] + 1} of {data.shape[fixed]})", fontsize="medium")
    if row_name:
        ax.set_ylabel(row_name)
    style: dict[str, Any] = {"transform": ax.transAxes, "color": "yellow", "fontsize": 9, "fontweight": "bold"}
    left, right, top, bottom = EDGES[view]
    ax.text(0.02, 0.5, left, ha="left", va="center", **style)
    ax.text(0.98, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.98, top, ha="center", va="top", **style)
    ax.text(0.5, 0.02, bottom, ha="center", va="bottom", **style)
