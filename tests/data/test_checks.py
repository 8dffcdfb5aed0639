import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from medseg.data.checks import check_case, check_dataset, raise_on_errors
from medseg.data.datamodule import SegDataModule
from medseg.data.discovery import DatasetError, discover
from medseg.data.synthetic import save_nifti

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
SHAPE = (6, 7, 5)


def _label(shape=SHAPE) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[2:4, 2:5, 1:3] = 1
    return lab


def _write(root: Path, cid: str, image: np.ndarray | None, label: np.ndarray | None, label_affine=AFFINE) -> dict:
    img_path, lab_path = root / "imagesTr" / f"{cid}.nii.gz", root / "labelsTr" / f"{cid}.nii.gz"
    if image is not None:
        save_nifti(img_path, image, AFFINE)
    if label is not None:
        save_nifti(lab_path, label, label_affine)
    return {"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"}


def _broken_dataset(root: Path) -> Path:
    """Two good cases, one warning-only case and five cases with one distinct error each."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    good = rng.normal(size=SHAPE).astype(np.float32)
    training = [
        _write(root, "good_a", good, _label()),
        _write(root, "good_b", good + 1, _label()),
        _write(root, "empty_label", good, np.zeros(SHAPE, np.uint8)),
        _write(root, "bad_shape", good, _label((6, 7, 4))),
        _write(root, "no_label", good, None),
        _write(root, "bad_affine", good, _label(), label_affine=np.diag([1.5, 1.5, 3.0, 1.0])),
    ]
    nan_img = good.copy()
    nan_img[0, 0, 0] = np.nan
    nan_img[1, 1, 1] = np.inf
    training.append(_write(root, "nan_image", nan_img, _label()))
    training.append(_write(root, "garbage", None, _label()))
    (root / "imagesTr" / "garbage.nii.gz").write_bytes(b"this is not a nifti file at all" * 10)
    meta = {"modality": {"0": "MRI"}, "labels": {"0": "background", "1": "organ"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


EXPECTED = {
    "garbage": "unreadable",
    "bad_shape": "label shape (6, 7, 4) != image shape (6, 7, 5)",
    "no_label": "label file missing",
    "nan_image": "2 NaN/Inf intensities",
    "bad_affine": "label affine differs from the image affine",
}


def test_check_dataset_collects_every_problem(tmp_path):
    spec = discover(_broken_dataset(tmp_path / "broken"))
    infos, problems = check_dataset(spec)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    assert sorted(p.case for p in errors) == sorted(EXPECTED)
    for p in errors:
        assert EXPECTED[p.case] in p.message, (p.case, p.message)
    assert [(p.case, p.message) for p in warnings] == [("empty_label", "label is empty (no foreground)")]
    assert sorted(infos) == ["empty_label", "good_a", "good_b"]
    assert infos["good_a"].shape == SHAPE
    np.testing.assert_allclose(infos["good_a"].spacing, [1.5, 1.5, 2.0])
    assert infos["good_a"].label_values == {0, 1}
    assert infos["good_a"].fg_sample.size == int(_label().sum())


def test_raise_on_errors_names_every_bad_case_once(tmp_path):
    root = _broken_dataset(tmp_path / "broken")
    _, problems = check_dataset(discover(root))
    with pytest.raises(DatasetError) as err:
        raise_on_errors(problems, root)
    msg = str(err.value)
    assert "5 problem(s) in 5 case(s)" in msg
    for cid, text in EXPECTED.items():
        lines = [ln for ln in msg.splitlines() if re.search(rf"\b{cid}\b", ln) and text in ln]
        assert lines, f"{cid}: {text!r} not reported in\n{msg}"
    for cid in ("good_a", "good_b", "empty_label"):
        assert cid not in msg


def test_warnings_alone_do_not_raise(tmp_path):
    root = tmp_path / "ok"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    img = np.ones(SHAPE, np.float32)
    case = _write(root, "c", img, np.zeros(SHAPE, np.uint8))
    (root / "dataset.json").write_text(json.dumps({"training": [case]}))
    _, problems = check_dataset(discover(root))
    assert [p.severity for p in problems] == ["warning"]
    raise_on_errors(problems, root)  # no exception


def test_label_values_must_be_declared_and_integral(tmp_path):
    root = tmp_path / "labels"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    img = np.ones(SHAPE, np.float32)
    lab3 = _label() * 3
    frac = _label().astype(np.float32) * 0.5
    training = [_write(root, "undeclared", img, lab3), _write(root, "fractional", img, frac)]
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "fg"}, "training": training}))
    _, problems = check_dataset(discover(root))
    by_case = {p.case: p.message for p in problems}
    assert "label values [3] not declared" in by_case["undeclared"]
    assert "non-negative integers" in by_case["fractional"]


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    spec = discover(tmp_path)
    _, problems = check_dataset(spec)
    assert [p.message for p in problems] == ["no training cases found"]


def test_missing_image_channel(tmp_path):
    lab = tmp_path / "l.nii.gz"
    save_nifti(lab, _label(), AFFINE)
    info, problems = check_case({"id": "x", "image": [str(tmp_path / "nope.nii.gz")], "label": str(lab)})
    assert info is None
    assert [p.message for p in problems] == ["image file missing"]


def test_datamodule_prepare_stops_on_broken_dataset(tmp_path, caplog):
    root = _broken_dataset(tmp_path / "broken")
    dm = SegDataModule(root=str(root), spacing=[2.0, 2.0, 2.0], patch_size=[8, 8, 8], num_workers=0)
    split_calls = []
    with caplog.at_level(logging.WARNING), pytest.raises(DatasetError) as err:
        dm.prepare_dataset(lambda ids: split_calls.append(ids) or {"train": ids[1:], "val": ids[:1]})
    for cid in EXPECTED:
        assert cid in str(err.value)
    assert split_calls == []  # stopped before the split (and before any training)
    assert dm.spec is None
    assert any("empty_label" in r.getMessage() for r in caplog.records)  # the warning is logged, not swallowed
