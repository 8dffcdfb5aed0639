"""MSD's 4D multi-modal layout (``imagesTr/BRATS_001.nii.gz`` with the channels in the 4th dimension): check-data,
training and predict read the channels in order, with their names from ``dataset.json``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from tiny_runs import tiny_train_overrides

from medseg.cli.predict import run as run_predict
from medseg.config import compose_config
from medseg.data.synthetic import DEMO_LABELS, save_nifti, synth_case, write_msd_dataset
from medseg.workflows.check_data import check_data
from medseg.workflows.train import train

CHANNELS = {"0": "FLAIR", "1": "T1w", "2": "T2w"}


def write_4d_task(root: Path, n: int = 6) -> Path:
    """An MSD task whose images hold 3 channels in the 4th dimension: the organ/lesion phantom, its square and its
    negative (only the first two see the lesion well: the channels must stay apart and in order)."""
    rng = np.random.default_rng(0)

    def case(i: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        image, label, affine = synth_case(rng, fov_mm=48.0, spacing_range=(1.5, 2.5))
        stack = np.stack([image, image**2, -image], -1).astype(np.float32)
        return f"BRATS_{i:03d}.nii.gz", stack, label, affine

    meta = {"name": "4d", "modality": CHANNELS, "labels": DEMO_LABELS}
    return write_msd_dataset(root, meta, (case(i) for i in range(n)))


def test_check_data_accepts_4d_images_and_counts_their_channels(tmp_path):
    root = write_4d_task(tmp_path / "task")
    assert check_data(str(root))["ok"]
    meta = json.loads((root / "dataset.json").read_text())
    meta["modality"] = {"0": "FLAIR", "1": "T1w"}
    (root / "dataset.json").write_text(json.dumps(meta))
    report = check_data(str(root))
    assert not report["ok"]
    assert "image has 3 channel(s) (a 4D file: channels in its 4th dimension) but dataset.json names 2" in str(
        report["problems"]
    )


def test_cases_that_fail_their_own_checks_do_not_set_the_usual_channel_count(tmp_path):
    root = write_4d_task(tmp_path / "task", n=3)
    for i in (1, 2):  # two of three cases broken (a 4D label): their channels are unknown, not "1 file = 1 channel"
        label = root / "labelsTr" / f"BRATS_{i:03d}.nii.gz"
        img = nib.load(label)
        save_nifti(label, np.stack([np.asarray(img.dataobj)] * 2, -1), img.affine)
    problems = check_data(str(root))["problems"]
    assert {p["case"] for p in problems} == {"BRATS_001", "BRATS_002"}, problems
    assert all("expected a 3D label" in p["message"] for p in problems), problems


@pytest.mark.slow
def test_train_and_predict_on_4d_images(tmp_path, capsys):
    root = write_4d_task(tmp_path / "task")
    run = tmp_path / "run"
    cfg = compose_config("train", tiny_train_overrides(root, epochs=10, every=5), run_dir=run)
    metrics = train(cfg)
    prep = json.loads((run / "preprocessing.json").read_text())
    assert prep["in_channels"] == 3 and metrics["val_dice_per_class"]["organ"] > 0.6  # untrained: ~0.4
    assert prep["channel_names"] == ["FLAIR", "T1w", "T2w"]
    case = root / "imagesTr" / "BRATS_000.nii.gz"
    out = tmp_path / "pred"
    assert run_predict(["-m", str(run), "-i", str(root / "imagesTr"), "-o", str(out)]) == 0
    capsys.readouterr()
    pred, src = nib.load(out / "BRATS_000.nii.gz"), nib.load(case)
    assert pred.shape == src.shape[:3]
    np.testing.assert_array_equal(pred.affine, src.affine)
    label = np.asarray(nib.load(root / "labelsTr" / "BRATS_000.nii.gz").dataobj)
    organ = np.asarray(pred.dataobj) == 1  # (10 epochs: the organ is learnt, the small lesion not yet)
    assert 2 * (organ & (label == 1)).sum() / (organ.sum() + (label == 1).sum()) > 0.6
