"""The dataset fingerprint on hand-made cases with known spacing, crop, classes and intensities (3D and 4D)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medseg.data.discovery import DatasetError, discover
from medseg.data.synthetic import save_nifti
from medseg.planning import fingerprint as fpr
from medseg.planning.fingerprint import dataset_fingerprint


def _case(root: Path, name: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> dict:
    save_nifti(root / "imagesTr" / f"{name}.nii.gz", image, affine)
    save_nifti(root / "labelsTr" / f"{name}.nii.gz", label, affine)
    return {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}


def _write(root: Path, cases: list[dict], modality: dict[str, str]) -> Path:
    labels = {"0": "background", "1": "organ", "2": "lesion"}
    meta = {"modality": modality, "labels": labels, "training": cases}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def known(tmp_path: Path) -> Path:
    """Two cases. ``a``: 10 x 12 x 6 voxels of 1 x 1 x 3 mm, non-zero in a 6 x 8 x 4 box, organ 8 voxels of value 10,
    lesion 1 voxel of value 20. ``b``: the same, stored with x and z swapped and x flipped (the fingerprint's RAS
    order undoes it), spacing 1 x 1 x 5 mm."""
    root = tmp_path / "known"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = np.zeros((10, 12, 6), np.float32)
    image[2:8, 2:10, 1:5] = 1.0
    label = np.zeros((10, 12, 6), np.uint8)
    label[3:5, 3:5, 2:4] = 1
    label[6, 6, 3] = 2
    image[label == 1], image[label == 2] = 10.0, 20.0
    a = _case(root, "a", image, label, np.diag([1.0, 1.0, 3.0, 1.0]))
    swapped = np.diag([1.0, 1.0, 1.0, 1.0])
    swapped[:3, :3] = [[0, 0, -1.0], [0, 1.0, 0], [5.0, 0, 0]]  # voxel axis 0 → S (5 mm), axis 2 → -R (1 mm)
    b = _case(root, "b", image.transpose(2, 1, 0), label.transpose(2, 1, 0), swapped)
    return _write(root, [a, b], {"0": "MRI"})


def test_spacing_shape_crop_classes_and_intensities(known, tmp_path):
    fp = dataset_fingerprint(discover(known), tmp_path / "cache")
    assert fp["cases"] == 2
    assert fp["spacings"] == [[1.0, 1.0, 3.0], [1.0, 1.0, 5.0]]
    assert fp["shapes_after_crop"] == [[6, 8, 4], [6, 8, 4]]
    assert fp["median_spacing"] == [1.0, 1.0, 4.0]
    assert fp["median_size_mm"] == [6.0, 8.0, 16.0]
    assert fp["classes"]["1"] == {"name": "organ", "voxels": 16, "fraction": 16 / 1440, "cases": 2}
    assert fp["classes"]["2"]["voxels"] == 2 and fp["classes"]["0"]["voxels"] == 1440 - 18
    (channel,) = fp["channels"]
    assert channel["name"] == "MRI" and channel["normalisation"] == "z-score"
    assert channel["p50"] == 10.0 and channel["mean"] == pytest.approx((16 * 10 + 2 * 20) / 18)
    assert (channel["p00_5"], channel["p99_5"]) == (10.0, 20.0)  # sorted: 16 × 10 then 2 × 20


def test_a_4d_image_counts_its_channels_in_order(tmp_path):
    root = tmp_path / "brats"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    image = np.stack([label * 1.0 + c * 100.0 + 1 for c in range(4)], -1).astype(np.float32)
    case = _case(root, "BRATS_001", image, label, np.eye(4))
    _write(root, [case], {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"})
    fp = dataset_fingerprint(discover(root), None)
    assert [c["name"] for c in fp["channels"]] == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert [c["p50"] for c in fp["channels"]] == [2.0, 102.0, 202.0, 302.0]


def test_cached_per_case_until_a_file_changes(known, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = dataset_fingerprint(discover(known), cache)
    assert len(list((cache / "fingerprints").glob("*.npz"))) == 2
    reads = []
    real = fpr.read_volume
    monkeypatch.setattr(fpr, "read_volume", lambda path, **kw: reads.append(path) or real(path, **kw))
    assert dataset_fingerprint(discover(known), cache) == first
    assert reads == []  # nothing read again
    label = known / "labelsTr" / "a.nii.gz"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    dataset_fingerprint(discover(known), cache)
    assert sorted(Path(r).name for r in reads) == ["a.nii.gz", "a.nii.gz"]  # case a again: image and label


def test_unreadable_cases_are_named(known, tmp_path):
    (known / "imagesTr" / "b.nii.gz").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"b: .*b.nii.gz: cannot read the image.*\n.*medseg check-data"):
        dataset_fingerprint(discover(known), None)
