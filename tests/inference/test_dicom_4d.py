"""Inputs real datasets come in: DICOM series folders (``medseg predict -i``) and MSD's 4D multi-channel NIfTI.

The DICOM series are written slice by slice with SimpleITK (GDCM), oblique and with axes that differ from RAS, so the
LPS (DICOM) → RAS (NIfTI) conversion is exercised; the prediction must carry the series' exact geometry and segment
the same world-space phantom the model was trained on. Folders that are not one consistent series (mixed
orientations, a missing slice) are refused by name.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from predict_helpers import dice, make_affine, render_phantom

from medseg.cli.predict import run as run_predict
from medseg.data.dicom import SeriesError, check_series, find_series, gdcm_call, read_series


def write_series(folder: Path, data: np.ndarray, affine: np.ndarray, uid: str = "1.2.826.0.1.3680043.2.1125.1",
                 skip: int | None = None, tilt_slice: int | None = None, prefix: str = "slice") -> Path:  # fmt: skip
    """``data`` (X, Y, Z) on the RAS ``affine`` as one DICOM file per slice (int16), like a scanner's series."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.sqrt((lps**2).sum(axis=0))
    direction = lps / spacing
    origin = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]
    volume = sitk.GetImageFromArray(np.ascontiguousarray((data * 1000).astype(np.int16).transpose(2, 1, 0)))
    volume.SetSpacing([float(s) for s in spacing])
    volume.SetDirection([float(v) for v in direction.ravel()])
    volume.SetOrigin([float(v) for v in origin])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    now = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    for z in range(data.shape[2]):
        if z == skip:
            continue
        cosines = direction[:, 0].tolist() + direction[:, 1].tolist()
        if z == tilt_slice:
            cosines = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        piece = volume[:, :, z]
        for tag, value in {
            "0008|0060": "MR",
            "0008|0021": now[0],
            "0008|0031": now[1],
            "0020|000d": uid + ".0",
            "0020|000e": uid,
            "0008|0018": f"{uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0037": "\\".join(f"{c:.10f}" for c in cosines),
            "0020|0032": "\\".join(f"{c:.6f}" for c in volume.TransformIndexToPhysicalPoint((0, 0, z))),
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.6f}",
        }.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}_{z:03d}.dcm"))
        with gdcm_call():  # GDCM sets the process locale to C
            writer.Execute(piece)
    return folder


OBLIQUE = make_affine((1.6, 1.4, 2.2), "LPS", 14.0, (1.0, 0.4, 0.2))  # voxel axes L, P, S, tilted


def test_reading_a_series_leaves_the_process_locale_alone(tmp_path):
    import locale

    affine, shape = make_affine((2.0, 2.0, 2.0), "RAS", fov_mm=12)
    write_series(tmp_path / "s", np.zeros(shape, np.float32), affine)
    before = locale.setlocale(locale.LC_ALL)
    assert find_series(tmp_path) and read_series(str(tmp_path / "s"))[0] == tuple(shape)
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM sets C: Python's text I/O would turn ASCII


def test_a_series_reads_with_its_exact_geometry(tmp_path):
    affine, shape = OBLIQUE
    image, _ = render_phantom(affine, shape)
    write_series(tmp_path / "s", image, affine)
    size, read_affine, data = read_series(str(tmp_path / "s"))
    assert size == tuple(shape)
    np.testing.assert_allclose(read_affine, affine, atol=1e-4)  # LPS → RAS undone exactly
    np.testing.assert_array_equal(data, (image * 1000).astype(np.int16))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"skip": 7}, "missing or uneven slices (step 4.4 mm"),
        ({"tilt_slice": 3}, "mixed slice orientations (e.g. slice_003.dcm)"),
    ],
)
def test_inconsistent_series_are_refused_by_name(tmp_path, kwargs, message):
    affine, shape = make_affine((1.5, 1.5, 2.2), "RAS")
    folder = write_series(tmp_path / "broken", np.zeros(shape, np.float32), affine, **kwargs)
    with pytest.raises(SeriesError) as err:
        check_series(str(folder))
    assert str(err.value).startswith(f"{folder}: not one consistent series: {message}"), str(err.value)


def test_several_series_in_one_folder_are_named_by_uid(tmp_path):
    affine, shape = make_affine((2.0, 2.0, 2.0), "RAS", fov_mm=20)
    write_series(tmp_path / "mixed", np.zeros(shape, np.float32), affine, uid="1.2.3.4")
    write_series(tmp_path / "mixed", np.ones(shape, np.float32), affine, uid="1.2.3.5", prefix="second")
    write_series(tmp_path / "alone", np.zeros(shape, np.float32), affine, uid="1.2.3.6")
    found = {s.name: s.ref for s in find_series(tmp_path)}
    assert found == {"1.2.3.4": f"{tmp_path / 'mixed'}::1.2.3.4", "1.2.3.5": f"{tmp_path / 'mixed'}::1.2.3.5",
                     "alone": str(tmp_path / "alone")}  # fmt: skip
    assert int(read_series(found["1.2.3.5"])[2].max()) == 1000


def test_predict_a_dicom_folder_writes_nifti_on_the_series_grid(trained_runs, tmp_path, capsys):
    series = tmp_path / "dicom"
    affine, shape = OBLIQUE
    image, label = render_phantom(affine, shape)
    write_series(series / "patient_a", image, affine, uid="1.2.3.10")
    other, other_shape = make_affine((1.8, 1.8, 2.0), "RAS", -9.0, (0, 0, 1))
    write_series(series / "patient_b", render_phantom(other, other_shape)[0], other, uid="1.2.3.11")
    write_series(series / "broken", np.zeros(other_shape, np.float32), other, uid="1.2.3.12", skip=4)
    out = tmp_path / "out"

    code = run_predict(["-m", str(trained_runs["3d"]), "-i", str(series), "-o", str(out)])
    capsys.readouterr()
    assert code == 1  # one folder refused: the command says so
    summary = json.loads((out / "predict_summary.json").read_text())["cases"]
    assert summary[str(series / "broken")].startswith(f"skipped: {series / 'broken'}: not one consistent series")
    assert summary["patient_a"].startswith("ok") and summary["patient_b"].startswith("ok")
    pred = nib.load(out / "patient_a.nii.gz")
    assert pred.shape == tuple(shape)
    np.testing.assert_allclose(pred.affine, affine, atol=1e-4)
    reread = sitk.ReadImage(str(out / "patient_a.nii.gz"))
    reference = sitk.ImageSeriesReader()
    reference.SetFileNames(check_series(str(series / "patient_a")))
    with gdcm_call():
        ref = reference.Execute()
    np.testing.assert_allclose(reread.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(reread.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(reread.GetDirection(), ref.GetDirection(), atol=1e-5)
    labels = np.asarray(pred.dataobj)
    assert dice(labels == 1, label == 1) > 0.6  # the organ where the phantom has it, on the series' grid


def test_a_4d_image_is_read_as_channels_in_order(tmp_path):
    from monai import transforms as T

    from medseg.data.transforms import preprocess

    affine, shape = make_affine((2.0, 2.0, 2.0), "LPS", fov_mm=16)
    data = np.stack([np.full(shape, 10.0 * (c + 1), np.float32) for c in range(3)], -1)
    data[0, 0, 0] = [1.0, 2.0, 3.0]  # a marker voxel: channel order survives reorientation
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "BRATS_001.nii.gz"))
    loaded = T.Compose(preprocess([2.0, 2.0, 2.0], "MRI", None, keys=("image",), crop_foreground=False)[:3])(
        {"image": [str(tmp_path / "BRATS_001.nii.gz")]}
    )["image"]
    assert tuple(loaded.shape) == (3, *shape)
    corner = loaded[:, -1, -1, 0]  # LPS voxel (0, 0, 0) is the R-most, A-most, I-most one after RAS reorientation
    assert corner.tolist() == [1.0, 2.0, 3.0]
