"""Shared fixtures: an isolated cache folder and tiny synthetic NIfTI datasets in MSD layout."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.synthetic import DEMO_LABELS, save_nifti, synth_case

# Tiny tensors on a small shared CPU: one intra-op thread avoids OpenMP oversubscription, which makes first calls of
# each conv shape 10-100x slower when other processes compete for the cores. Subprocesses inherit OMP_NUM_THREADS.
torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", "1")))

# Without a GPU the Triton kernels run under the CPU interpreter. Set it before anything imports triton: triton caches
# its environment knobs, so setting it later (tests/kernels/conftest.py) is too late once another test touched triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point MEDSEG_CACHE (and MEDSEG_RUNS) at temporary folders so no test writes to ~/.cache or ./runs."""
    old = {k: os.environ.get(k) for k in ("MEDSEG_CACHE", "MEDSEG_RUNS")}
    os.environ["MEDSEG_CACHE"] = str(tmp_path_factory.mktemp("medseg_cache"))
    os.environ["MEDSEG_RUNS"] = str(tmp_path_factory.mktemp("medseg_runs"))
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def write_msd_dataset(
    root: Path, n_cases: int = 6, fov_mm: float = 40.0, spacing_range: tuple[float, float] = (1.5, 2.5), seed: int = 0
) -> Path:
    """A tiny MSD task (imagesTr/, labelsTr/, dataset.json) of synthetic organ (1) + lesion (2) volumes."""
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    training = []
    for i in range(n_cases):
        image, label, affine = synth_case(rng, fov_mm=fov_mm, spacing_range=spacing_range)
        name = f"case_{i:03d}.nii.gz"
        save_nifti(root / "imagesTr" / name, image, affine)
        save_nifti(root / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "tiny",
        "modality": {"0": "MRI"},
        "labels": DEMO_LABELS,
        "numTraining": n_cases,
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


@pytest.fixture
def msd_dataset_factory() -> Callable[..., Path]:
    """``factory(root, n_cases=6, fov_mm=40, spacing_range=(1.5, 2.5), seed=0)`` writes an MSD task into ``root``."""
    return write_msd_dataset


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Six synthetic cases (~16-27 voxels per axis) in MSD layout under ``tmp_path / "tiny"``."""
    return write_msd_dataset(tmp_path / "tiny", n_cases=6)
