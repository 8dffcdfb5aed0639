"""Tiny runs (2D and 3D U-Nets) trained once per session on one world-space phantom sampled on random grids.

The training cases are ``predict_helpers.render_phantom`` on ``medseg.data.synthetic.random_affine`` grids (56 mm
field of view, 1.5-2.5 mm spacing, permuted/flipped/oblique axes), so the networks know the object the geometry tests
re-grid. Calibration (2-core CPU, one thread): the 3D U-Net (8/16/32) reaches val Dice ~0.85 in 6 epochs (~4 s); the
2D one ~0.73 in 15 epochs of 32² slices at lr 1e-2 without augmentation (~4 s). Predictions on held-out grids: Dice
~0.84 (3D) / ~0.78 (2D) against the phantom's labels — stable and far from trivial, which is all geometry tests need.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_helpers import render_phantom

from medseg.data.synthetic import DEMO_LABELS, random_affine, save_nifti

COMMON = [
    "data=nifti",
    "data/augment=light",
    "plan.enabled=false",
    "model/net=unet",
    "model.net.channels=[8,16,32]",
    "data.spacing=[2.0,2.0,2.0]",
    "data.val_fraction=0.34",
    "data.num_workers=0",
    "callbacks.progress_bar=null",
    "+trainer.enable_progress_bar=false",
]
RUNS = {
    "3d": ["data.patch_size=[16,16,16]", "trainer.max_epochs=6", "trainer.check_val_every_n_epoch=2"],
    "2d": [
        "model.net.spatial_dims=2",
        "data.patch_size_2d=[32,32]",
        "data.samples_per_volume=4",
        "data.batch_size=8",
        "data.pos_fraction=0.9",
        "model.optimizer.lr=1e-2",
        "trainer.max_epochs=15",
        "trainer.check_val_every_n_epoch=15",
    ],
}


def _write_dataset(root: Path, n_cases: int = 6, seed: int = 0) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    training = []
    for i in range(n_cases):
        affine, shape = random_affine(rng, 56.0, (1.5, 2.5))
        image, label = render_phantom(affine, shape, seed=i)
        name = f"case_{i:03d}.nii.gz"
        save_nifti(root / "imagesTr" / name, image, affine)
        save_nifti(root / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "tiny", "modality": {"0": "MRI"}, "labels": DEMO_LABELS, "numTraining": n_cases}
    (root / "dataset.json").write_text(json.dumps({**meta, "training": training}))
    return root


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"3d": run_dir, "2d": run_dir}``: tiny U-Nets trained on synthetic organ/lesion volumes (once per session)."""
    from medseg.config import compose_config
    from medseg.workflows.train import train

    base = tmp_path_factory.mktemp("inference_runs")
    data = _write_dataset(base / "data")
    runs = {}
    for name, overrides in RUNS.items():
        cfg = compose_config("train", [*COMMON, f"data.root={data}", *overrides], run_dir=base / f"run_{name}")
        metrics = train(cfg)
        assert metrics["val_dice"] > 0.6, (name, metrics)  # learned something: predictions are not trivial
        runs[name] = base / f"run_{name}"
    return runs


@pytest.fixture(scope="session", params=["3d", "2d"])
def run_dir(request: pytest.FixtureRequest, trained_runs: dict[str, Path]) -> Path:
    """Each trained run in turn."""
    return trained_runs[request.param]
