"""LightningDataModule: discovery → checks → split → cached MONAI pipelines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from monai.data import CacheDataset, DataLoader, Dataset

from medseg.data.checks import check_dataset, raise_on_errors
from medseg.data.discovery import DatasetError, DatasetSpec, discover
from medseg.data.synthetic import make_demo_dataset
from medseg.data.transforms import intensity_stats, train_transforms, val_transforms

log = logging.getLogger(__name__)


def generate_dataset(generate: str | None, root: Path) -> None:
    """Build a built-in synthetic dataset into ``root`` once: ``demo`` or ``turbolift:<stage>``."""
    if generate == "demo":
        make_demo_dataset(root)
    elif generate and generate.startswith("turbolift:"):
        from medseg.data.turbolift_demo import make_stage_dataset

        make_stage_dataset(root, generate.split(":", 1)[1])
    elif generate:
        raise ValueError(f"data.generate must be 'demo', 'turbolift:<stage>' or null, got {generate!r}")


class SegDataModule(L.LightningDataModule):
    """Data for one training run.

    Args:
        root: dataset folder (MSD, nnU-Net raw, or images/ + labels/).
        generate: ``demo`` generates the built-in synthetic dataset into ``root`` first.
        spatial_dims: 3, or 2 to train on slices (``patch_size_2d``) of the 3D volumes.
        spacing: target spacing in mm (RAS order); None = the dataset's median spacing.
        modality: ``auto`` (from dataset.json), ``CT`` or ``MRI`` (sets the intensity normalisation).
        patch_size: 3D training patch.
        patch_size_2d: 2D training patch (in-plane, axial slices).
        batch_size: patches per step (nnU-Net's meaning); a multiple of ``samples_per_volume``.
        samples_per_volume: patches drawn per loaded volume (each step loads batch_size / samples_per_volume volumes).
        pos_fraction: share of patches centred on foreground.
        val_fraction: share of training cases held out for validation (seeded).
        seed: split seed.
        num_workers: data-loader workers.
        cache: cache the deterministic preprocessing in memory.
        augment: probabilities of ``flip``, ``rotate90``, ``intensity``, ``noise``.
        num_classes / in_channels: filled in from the dataset when None.
    """

    def __init__(
        self,
        root: str,
        generate: str | None = None,
        spatial_dims: int = 3,
        spacing: list[float] | None = None,
        modality: str = "auto",
        patch_size: list[int] = (64, 64, 64),  # type: ignore[assignment]
        patch_size_2d: list[int] = (128, 128),  # type: ignore[assignment]
        batch_size: int = 2,
        samples_per_volume: int = 2,
        pos_fraction: float = 0.33,
        val_fraction: float = 0.2,
        seed: int = 12345,
        num_workers: int = 2,
        cache: bool = True,
        augment: dict[str, float] | None = None,
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"model.net.spatial_dims must be 2 or 3, got {spatial_dims}")
        if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0):
            raise ValueError(f"data.spacing must be 3 positive numbers (mm), got {spacing}")
        self.root, self.generate, self.spatial_dims = Path(root).expanduser(), generate, spatial_dims
        self.spacing, self.modality_opt = spacing, modality
        self.patch = list(patch_size) if spatial_dims == 3 else [*patch_size_2d, 1]
        if len(self.patch) != 3:
            raise ValueError(f"data.patch_size must have 3 entries (data.patch_size_2d 2), got {self.patch}")
        if batch_size < 1 or samples_per_volume < 1 or batch_size % samples_per_volume:
            raise ValueError(
                f"data.batch_size={batch_size} must be a positive multiple of "
                f"data.samples_per_volume={samples_per_volume}"
            )
        self.batch_size, self.samples_per_volume, self.pos_fraction = batch_size, samples_per_volume, pos_fraction
        self.val_fraction, self.seed, self.num_workers, self.cache = val_fraction, seed, num_workers, cache
        self.augment = dict(augment or {})
        self.num_classes, self.in_channels = num_classes, in_channels
        self.spec: DatasetSpec | None = None
        self.split: dict[str, list[str]] = {}
        self.stats: dict[str, float] | None = None

    @property
    def roi_size(self) -> list[int]:
        """Sliding-window size in the 3D volume (a 2D patch is ``(H, W, 1)``)."""
        return list(self.patch)

    def prepare_dataset(self, make_split: Callable[[list[str]], dict[str, list[str]]]) -> dict[str, Any]:
        """Discover and check the dataset, fix spacing/normalisation/classes and the split. Returns a summary.

        Args:
            make_split: case ids → ``{"train": [...], "val": [...]}`` (optionally ``"test"``, never trained on).
        """
        generate_dataset(self.generate, self.root)
        spec = discover(self.root, strict=False)  # dataset.json entry problems are listed with the others
        infos, problems = check_dataset(spec)
        for p in problems:
            if p.severity == "warning":
                log.warning(str(p))
        raise_on_errors(problems, self.root)
        self.spec = spec
        self.modality = spec.modality if self.modality_opt == "auto" else self.modality_opt.upper()
        if self.spacing is None:
            self.spacing = [float(s) for s in np.median([i.spacing for i in infos.values()], axis=0)]
        found = max(max(i.label_values) for i in infos.values()) + 1
        declared = spec.num_classes or found
        if self.num_classes is None:
            self.num_classes = max(declared, found)
        elif found > self.num_classes:
            raise DatasetError(f"data.num_classes={self.num_classes} but labels contain value {found - 1}")
        self.in_channels = self.in_channels or len(spec.cases[0]["image"])
        self.split = make_split([c["id"] for c in spec.cases])
        train_ids = set(self.split["train"])
        if self.modality == "CT":
            self.stats = intensity_stats([i.fg_sample for k, i in infos.items() if k in train_ids])
        return {
            "layout": spec.layout,
            "cases": len(spec.cases),
            "spacing": self.spacing,
            "modality": self.modality,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "intensity_stats": self.stats,
        }

    def _items(self, ids: list[str]) -> list[dict[str, Any]]:
        assert self.spec is not None, "call prepare_dataset() first"
        by_id = {c["id"]: c for c in self.spec.cases}
        return [{"image": by_id[i]["image"], "label": by_id[i]["label"], "case": i} for i in ids]

    def setup(self, stage: str | None = None) -> None:
        assert self.spacing is not None
        t_train = train_transforms(
            self.spacing,
            self.modality,
            self.stats,
            self.patch,
            self.samples_per_volume,
            self.pos_fraction,
            self.augment,
        )
        t_val = val_transforms(self.spacing, self.modality, self.stats)
        make = (
            (lambda d, t: CacheDataset(d, t, num_workers=self.num_workers, progress=False)) if self.cache else Dataset
        )
        self.train_ds = make(self._items(self.split["train"]), t_train)
        self.val_ds = make(self._items(self.split["val"]), t_val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_ds,
            batch_size=self.batch_size // self.samples_per_volume,
            shuffle=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_ds, batch_size=1, num_workers=0)
