import json
from pathlib import Path

import numpy as np
import pytest

from medseg.data.discovery import DatasetError, discover, parse_labels
from medseg.data.synthetic import save_nifti

AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def _nii(path: Path, value: float = 0.0, dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_nifti(path, np.full((4, 5, 3), value, dtype=dtype), AFFINE)
    return path


def test_msd_layout(tmp_path):
    for cid in ("lung_001", "lung_002"):
        _nii(tmp_path / "imagesTr" / f"{cid}.nii.gz")
        _nii(tmp_path / "labelsTr" / f"{cid}.nii.gz", dtype=np.uint8)
    meta = {
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "cancer"},
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("lung_002", "lung_001")
        ],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    spec = discover(tmp_path)
    assert spec.layout == "msd"
    assert [c["id"] for c in spec.cases] == ["lung_002", "lung_001"]
    root = tmp_path.resolve()
    assert spec.cases[0]["image"] == [str(root / "imagesTr" / "lung_002.nii.gz")]
    assert spec.cases[0]["label"] == str(root / "labelsTr" / "lung_002.nii.gz")
    assert spec.labels == {0: "background", 1: "cancer"}
    assert spec.num_classes == 2
    assert spec.channels == ["CT"]
    assert spec.modality == "CT"


def test_msd_multichannel_list_and_missing_label(tmp_path):
    _nii(tmp_path / "imagesTr" / "a_t1.nii.gz")
    _nii(tmp_path / "imagesTr" / "a_t2.nii.gz")
    meta = {
        "modality": {"0": "T1", "1": "T2"},
        "training": [{"image": ["imagesTr/a_t1.nii.gz", "imagesTr/a_t2.nii.gz"]}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    spec = discover(tmp_path)
    assert spec.cases[0]["id"] == "a_t1"
    assert len(spec.cases[0]["image"]) == 2
    assert spec.cases[0]["label"] is None
    assert spec.channels == ["T1", "T2"]
    assert spec.modality == "MRI"
    assert spec.num_classes is None


def _nnunet(root: Path) -> Path:
    for cid in ("BRATS_002", "BRATS_001"):
        _nii(root / "imagesTr" / f"{cid}_0000.nii.gz")
        _nii(root / "imagesTr" / f"{cid}_0001.nii.gz")
        _nii(root / "labelsTr" / f"{cid}.nii.gz", dtype=np.uint8)
    meta = {
        "channel_names": {"0": "T2", "1": "FLAIR"},
        "labels": {"background": 0, "edema": 1, "tumour": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_raw_layout(tmp_path):
    root = _nnunet(tmp_path / "Dataset001_Brain")
    spec = discover(root)
    assert spec.layout == "nnunet"
    assert [c["id"] for c in spec.cases] == ["BRATS_001", "BRATS_002"]
    case = spec.cases[0]
    assert case["image"] == [
        str(root / "imagesTr" / "BRATS_001_0000.nii.gz"),
        str(root / "imagesTr" / "BRATS_001_0001.nii.gz"),
    ]
    assert case["label"] == str(root / "labelsTr" / "BRATS_001.nii.gz")
    assert spec.labels == {0: "background", 1: "edema", 2: "tumour"}
    assert spec.num_classes == 3
    assert spec.channels == ["T2", "FLAIR"]
    assert spec.modality == "MRI"


def test_nnunet_ct_modality_and_other_file_ending(tmp_path):
    root = tmp_path / "Dataset002"
    _nii(root / "imagesTr" / "liver_7_0000.nii")
    _nii(root / "labelsTr" / "liver_7.nii", dtype=np.uint8)
    (root / "imagesTr" / "notes.txt").write_text("not an image")
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii"}
    (root / "dataset.json").write_text(json.dumps(meta))
    spec = discover(root)
    assert [c["id"] for c in spec.cases] == ["liver_7"]
    assert spec.cases[0]["image"] == [str(root / "imagesTr" / "liver_7_0000.nii")]
    assert spec.modality == "CT"


def test_plain_folders_layout(tmp_path):
    for cid in ("p2", "p1"):
        _nii(tmp_path / "images" / f"{cid}.nii.gz")
    _nii(tmp_path / "labels" / "p1.nii.gz", dtype=np.uint8)
    (tmp_path / "images" / "README.md").write_text("ignored")
    spec = discover(tmp_path)
    assert spec.layout == "folders"
    assert [c["id"] for c in spec.cases] == ["p1", "p2"]
    assert spec.cases[0] == {
        "id": "p1",
        "image": [str(tmp_path / "images" / "p1.nii.gz")],
        "label": str(tmp_path / "labels" / "p1.nii.gz"),
    }
    assert spec.cases[1]["label"] == str(tmp_path / "labels" / "p2.nii.gz")  # expected path; checks report it missing
    assert spec.labels == {}
    assert spec.modality == "MRI"


@pytest.mark.parametrize("key", ["image", "label"])
def test_dataset_json_path_escaping_root_raises(tmp_path, key):
    root = tmp_path / "task"
    _nii(root / "imagesTr" / "a.nii.gz")
    _nii(tmp_path / "outside.nii.gz")
    entry = {"image": "./imagesTr/a.nii.gz", "label": "./imagesTr/a.nii.gz"}
    entry[key] = "../outside.nii.gz"
    (root / "dataset.json").write_text(json.dumps({"training": [entry]}))
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        discover(root)


def test_dataset_json_absolute_path_outside_root_raises(tmp_path):
    root = tmp_path / "task"
    root.mkdir()
    outside = _nii(tmp_path / "outside.nii.gz")
    (root / "dataset.json").write_text(json.dumps({"training": [{"image": str(outside)}]}))
    with pytest.raises(DatasetError, match="escapes"):
        discover(root)


def test_non_dataset_folder_raises_naming_it(tmp_path):
    folder = tmp_path / "holiday_photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(DatasetError) as err:
        discover(folder)
    assert str(folder) in str(err.value)
    assert "no dataset found" in str(err.value)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        discover(tmp_path / "nope")


def test_unparsable_dataset_json_raises(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot parse"):
        discover(tmp_path)


def test_parse_labels_both_styles():
    assert parse_labels({"labels": {"0": "background", "1": "liver"}}) == {0: "background", 1: "liver"}
    assert parse_labels({"labels": {"background": 0, "liver": 1}}) == {0: "background", 1: "liver"}
    assert parse_labels({}) == {}
    with pytest.raises(DatasetError):
        parse_labels({"labels": {"liver": "one"}})
