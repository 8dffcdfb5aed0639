"""Issue 17, item 4: the final epoch is always validated; a run whose checkpoint was never chosen by a validation
during training says so (metrics.json, test_metrics.json, the CV summary)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_train_overrides

from medseg.config import compose_config
from medseg.workflows.train import train


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture
def dataset(tmp_path, msd_dataset_factory) -> Path:
    return msd_dataset_factory(tmp_path / "data", n_cases=6, fov_mm=48.0, spacing_range=(1.5, 2.5), seed=0)


def test_no_validation_during_training_is_recorded(dataset, tmp_path):
    """max_epochs 2 < check_val_every_n_epoch 5: no validation in fit; the final weights are validated after it,
    saved as best.ckpt, and the run says its checkpoint was never chosen among epochs."""
    run = tmp_path / "run"
    metrics = train(compose_config("train", tiny_train_overrides(dataset, epochs=2, every=5), run_dir=run))
    assert metrics["validated_in_training"] is False and metrics["validations_in_training"] == 0
    assert metrics["checkpoint_selection"] == "final weights (validated after training)"
    assert metrics["best_epoch"] == 2 and metrics["best_checkpoint"] == "checkpoints/best.ckpt"
    best, last = _state(run / "checkpoints" / "best.ckpt"), _state(run / "checkpoints" / "last.ckpt")
    assert all(torch.equal(best[k], last[k]) for k in last)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["validated_in_training"] is False and on_disk["val_dice"] == pytest.approx(metrics["val_dice"])


def test_final_epoch_competes_with_the_validated_ones(dataset, tmp_path):
    """max_epochs 3, every 2: epoch 2 is validated in fit, epoch 3 after it; best.ckpt holds whichever scored
    higher, so the selected Dice is the maximum of the two validations."""
    run = tmp_path / "run"
    metrics = train(compose_config("train", tiny_train_overrides(dataset, epochs=3, every=2), run_dir=run))
    assert metrics["validated_in_training"] is True and metrics["validations_in_training"] == 1
    with (run / "logs" / "metrics.csv").open() as fh:
        val = [float(r["val_dice"]) for r in csv.DictReader(fh) if r.get("val_dice")]
    assert len(val) >= 2  # epoch 2 in fit, epoch 3 after it (then the re-validation of the best)
    assert metrics["val_dice"] == pytest.approx(max(val[:2]), abs=1e-6)
    assert metrics["best_epoch"] == (3 if val[1] > val[0] else 2)


def test_cv_summary_names_the_folds_never_validated_in_training(dataset, tmp_path):
    from medseg.workflows.cv import cross_validate

    overrides = [*tiny_train_overrides(dataset, epochs=1, every=5), "cv.folds=2"]
    summary = cross_validate(compose_config("cv", overrides, run_dir=tmp_path / "cv"))
    assert summary["unvalidated_folds"] == [0, 1]
    assert all(f["validated_in_training"] is False for f in summary["folds"])
    assert "no validation ran during training" in (tmp_path / "cv" / "report.md").read_text()
