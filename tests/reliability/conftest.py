"""Fixtures of the reliability tests: a loadable (untrained) run directory and small image writers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.run_dir import FINISHED, RunDir

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def phantom(shape: tuple[int, int, int] = (20, 20, 20), seed: int = 0) -> np.ndarray:
    """A noisy bright ball: a plausible MRI-like input."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    ball = (np.sqrt((grid**2).sum(0)) < min(shape) / 3).astype(np.float32)
    return (ball * 100 + rng.normal(0, 5, shape)).astype(np.float32)


def make_run(root: Path, label_values: list[int] | None = None, in_channels: int = 1) -> Path:
    """A finished train run holding a randomly initialised tiny U-Net (seeded): loadable by predict and export."""
    from medseg.config import build, compose_config, resolved_yaml

    run = RunDir(root)
    num_classes = len(label_values) if label_values else 3
    overrides = [
        "data=nifti",
        f"data.root={root}",
        "model/net=unet",
        "model.net.channels=[4,8]",
        "data.patch_size=[16,16,16]",
        "data.spacing=[2.0,2.0,2.0]",
        f"data.num_classes={num_classes}",
        f"data.in_channels={in_channels}",
    ]
    cfg = compose_config("train", overrides, run_dir=root)
    torch.manual_seed(0)
    module = build(cfg.model, roi_size=[16, 16, 16])
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "epoch": 0}, run.best_checkpoint)
    torch.save({"state_dict": module.state_dict(), "epoch": 0}, run.last_checkpoint)
    run.write_text(run.config, resolved_yaml(cfg))
    prep = {
        "spacing": [2.0, 2.0, 2.0],
        "modality": "MRI",
        "num_classes": num_classes,
        "in_channels": in_channels,
        "intensity_stats": None,
        "roi_size": [16, 16, 16],
        "spatial_dims": 3,
    }
    if label_values:
        prep["label_values"] = label_values
    run.write_json(run.preprocessing, prep)
    run.write_json(run.metrics, {"val_dice_per_class": {"organ": 0.5, "lesion": 0.5}})
    run.mark(FINISHED)
    return root


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "run")


def state(path: Path, **record: object) -> None:
    (path / "run_state.json").write_text(json.dumps(record))
