"""``save_overlay``: slices through the foreground centre, RAS display of any voxel order, grid checks, PNG output."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from medseg.data.synthetic import save_nifti
from medseg.viz import save_overlay
from medseg.viz.overlay import choose_centre, prepare_overlay

SHAPE = (20, 24, 28)
SPACING = (1.0, 2.0, 3.0)
BLOB = (slice(6, 11), slice(10, 15), slice(14, 19))  # centre (8, 12, 16)
LESION = (slice(13, 15), slice(4, 6), slice(15, 18))  # class 2: patient's right, posterior, at the blob's height


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def volumes(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, prediction, label) in RAS voxel order: a blob of class 1 and a small class-2 lesion."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.1, SHAPE).astype(np.float32)
    pred = np.zeros(SHAPE, np.uint8)
    pred[BLOB] = 1
    pred[LESION] = 2
    image[pred > 0] += 1.0
    label = np.zeros(SHAPE, np.uint8)
    label[7:12, 10:15, 14:19] = 1
    return image, pred, label


def ras_affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 5.0)
    return affine


def reoriented(data: np.ndarray, affine: np.ndarray, flip: tuple[int, ...], order: tuple[int, ...]):
    """The same world-space volume stored with flipped and permuted voxel axes (and the matching affine)."""
    out = np.flip(data, axis=flip) if flip else data
    new_aff = affine.copy()
    for axis in flip:
        new_aff[:3, 3] += new_aff[:3, axis] * (data.shape[axis] - 1)
        new_aff[:3, axis] *= -1
    perm = np.eye(4)
    perm[:3, :3] = np.eye(3)[:, order]
    return np.ascontiguousarray(out.transpose(order)), new_aff @ perm  # stored index j ↔ old index i = P j


def write_case(folder: Path, flip: tuple[int, ...] = (), order: tuple[int, ...] = (0, 1, 2)) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in zip(("image", "prediction", "label"), volumes(), strict=True):
        stored, affine = reoriented(data, ras_affine(), flip, order)
        paths[name] = folder / f"{name}.nii.gz"
        save_nifti(paths[name], stored, affine)
    return paths


def test_reoriented_helper_keeps_world_positions():
    data = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    stored, affine = reoriented(data, ras_affine(), (0, 2), (2, 0, 1))
    ijk = np.array([3, 5, 7])
    world = ras_affine() @ np.array([*ijk, 1])
    new_ijk = np.round(np.linalg.solve(affine, world)[:3]).astype(int)
    assert stored[tuple(new_ijk)] == data[tuple(ijk)]


def test_slices_cross_the_blob_centre_with_spacing_aspect(tmp_path):
    paths = write_case(tmp_path)
    data = prepare_overlay(paths["image"], paths["prediction"])
    # centre of mass of blob (125 voxels) + lesion (8 voxels), rounded: the blob dominates
    mask = volumes()[1] > 0
    expected = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
    assert data.centre == expected
    assert data.shape == SHAPE and data.spacing == SPACING
    assert data.classes == [1, 2]
    # displayed pixel height/width in mm: axial A/R, coronal S/R, sagittal S/A
    assert data.aspect == pytest.approx({"axial": 2.0, "coronal": 3.0, "sagittal": 1.5})
    assert data.views["axial"]["image"].shape == (SHAPE[1], SHAPE[0])  # rows A, columns R
    assert data.views["sagittal"]["prediction"].shape == (SHAPE[2], SHAPE[1])  # rows S, columns A


def test_centre_of_single_blob_is_its_centre():
    pred = np.zeros(SHAPE, np.uint8)
    pred[BLOB] = 1
    assert choose_centre(pred) == (8, 12, 16)


def test_empty_prediction_falls_back_to_label_then_middle():
    empty = np.zeros(SHAPE, np.uint8)
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 3:6, 20:23] = 2
    assert choose_centre(empty, label) == (3, 4, 21)
    assert choose_centre(empty, np.zeros_like(label)) == (10, 12, 14)
    assert choose_centre(empty) == (10, 12, 14)


def test_hollow_foreground_slices_show_foreground():
    """Two blobs far apart: the centre of mass lies between them, so the slices move to the nearest foreground."""
    pred = np.zeros(SHAPE, np.uint8)
    pred[1:4, 1:4, 1:4] = 1
    pred[16:19, 20:23, 24:27] = 1
    centre = choose_centre(pred)
    assert centre == (3, 3, 3)  # the centre of mass (9.5, 11.5, 13.5) is empty on every axis; ties go low
    assert all(pred.take(c, axis=a).any() for a, c in enumerate(centre))


def test_radiological_display_orientation(tmp_path):
    """Axial view: patient right on the screen's left, anterior on top (the lesion is right and posterior)."""
    paths = write_case(tmp_path)
    data = prepare_overlay(paths["image"], paths["prediction"])
    assert data.centre[2] in range(LESION[2].start, LESION[2].stop)  # the axial slice cuts the lesion
    axial = data.views["axial"]["prediction"]
    np.testing.assert_array_equal(axial, volumes()[1][:, :, data.centre[2]].T[::-1, ::-1])
    rows, cols = np.nonzero(axial == 2)
    assert cols.max() < axial.shape[1] / 2  # patient's right → left half of the picture
    assert rows.min() > axial.shape[0] / 2  # posterior → lower half
    rows, cols = np.nonzero(axial == 1)
    assert cols.mean() > axial.shape[1] / 2  # the blob is left of the patient's midline → right half


@pytest.mark.parametrize(("flip", "order"), [((0,), (0, 1, 2)), ((0, 2), (2, 0, 1)), ((1,), (1, 2, 0))])
def test_flipped_and_permuted_storage_gives_the_same_picture(tmp_path, flip, order):
    ref = prepare_overlay(*write_case(tmp_path / "ras").values())
    other = prepare_overlay(*write_case(tmp_path / "other", flip, order).values())
    assert other.centre == ref.centre
    assert other.spacing == pytest.approx(ref.spacing)
    assert other.aspect == pytest.approx(ref.aspect)
    for view in ("axial", "coronal", "sagittal"):
        for layer in ("image", "prediction", "label"):
            np.testing.assert_array_equal(other.views[view][layer], ref.views[view][layer])


def test_nrrd_input_matches_nifti(tmp_path):
    import SimpleITK as sitk

    nifti = write_case(tmp_path / "nii")
    image, pred, _ = volumes()
    affine = ras_affine()
    nrrd = {}
    for name, data in (("image", image), ("prediction", pred)):
        itk = sitk.GetImageFromArray(data.transpose(2, 1, 0))  # ITK arrays are (z, y, x)
        itk.SetSpacing(SPACING)
        lps = np.diag([-1.0, -1.0, 1.0])
        itk.SetOrigin(tuple(lps @ affine[:3, 3]))
        itk.SetDirection(tuple((lps @ (affine[:3, :3] / np.asarray(SPACING))).ravel()))
        nrrd[name] = tmp_path / f"{name}.nrrd"
        sitk.WriteImage(itk, str(nrrd[name]))
    a = prepare_overlay(nifti["image"], nifti["prediction"])
    b = prepare_overlay(nrrd["image"], nrrd["prediction"])
    assert a.centre == b.centre
    np.testing.assert_array_equal(a.views["coronal"]["prediction"], b.views["coronal"]["prediction"])


def test_grid_mismatch_names_both_files(tmp_path):
    paths = write_case(tmp_path)
    image, pred, _ = volumes()
    other_shape = tmp_path / "short.nii.gz"
    save_nifti(other_shape, pred[:-1], ras_affine())
    with pytest.raises(ValueError, match="shapes differ") as err:
        save_overlay(paths["image"], other_shape, tmp_path / "x.png")
    assert str(other_shape) in str(err.value) and str(paths["image"]) in str(err.value)
    shifted = ras_affine()
    shifted[0, 3] += 5.0
    moved = tmp_path / "moved.nii.gz"
    save_nifti(moved, pred, shifted)
    with pytest.raises(ValueError, match="affines differ") as err:
        save_overlay(paths["image"], paths["prediction"], tmp_path / "x.png", label=moved)
    assert str(moved) in str(err.value)
    assert not (tmp_path / "x.png").exists()


def test_save_overlay_writes_png_atomically(tmp_path):
    paths = write_case(tmp_path / "case")
    out = tmp_path / "out" / "one_row.png"
    assert save_overlay(paths["image"], paths["prediction"], out, title="case") == out
    two_rows = save_overlay(
        paths["image"], paths["prediction"], tmp_path / "out" / "two.png", label=paths["label"], class_names={1: "x"}
    )
    w1, h1 = png_size(out)
    w2, h2 = png_size(two_rows)
    assert w1 == w2 == 1200  # 12 in at 100 dpi
    assert h2 > h1 > 300
    assert sorted(p.name for p in out.parent.iterdir()) == ["one_row.png", "two.png"]  # no temporary file left
