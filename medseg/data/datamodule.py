"""LightningDataModule: discovery → checks → split → cached MONAI pipelines."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from monai.data import CacheDataset, DataLoader, Dataset
from monai.transforms import Compose
from torch.utils.data import RandomSampler

from medseg.data.cache import DiskCache, DiskCacheDataset
from medseg.data.checks import CaseInfo, case_channels, check_dataset, raise_on_errors
from medseg.data.discovery import DatasetError, DatasetSpec, discover
from medseg.data.labels import class_values, unused_classes
from medseg.data.synthetic import make_demo_dataset
from medseg.data.transforms import disk_cached, intensity_stats, preprocess, train_transforms, val_transforms

CACHE_MODES = ("memory", "disk", "none")


def cache_mode(cache: str | bool | None) -> str:
    """``data.cache`` as one of ``memory``, ``disk``, ``none`` (old configs: ``true`` = memory, ``false`` = none)."""
    if cache is True or cache is False or cache is None:
        return "memory" if cache else "none"
    mode = str(cache).lower()
    if mode in ("true", "false"):
        return "memory" if mode == "true" else "none"
    if mode not in CACHE_MODES:
        raise ValueError(f"data.cache must be one of {', '.join(CACHE_MODES)} (or true/false), got {cache!r}")
    return mode


def default_cache_dir() -> Path:
    """``$MEDSEG_CACHE/preprocessed`` (``~/.cache/medseg/preprocessed``): where ``data.cache=disk`` writes."""
    return Path(os.environ.get("MEDSEG_CACHE") or "~/.cache/medseg").expanduser() / "preprocessed"


log = logging.getLogger(__name__)


def generate_dataset(generate: str | None, root: Path) -> None:
    """Build a built-in synthetic dataset into ``root`` once: ``demo`` or ``turbolift:<stage>[:<cases>]``."""
    if generate == "demo":
        make_demo_dataset(root)
    elif generate and generate.startswith("turbolift:"):
        from medseg.data.turbolift_demo import make_stage_dataset

        _, stage, *cases = generate.split(":")
        make_stage_dataset(root, stage, n_cases=int(cases[0]) if cases else None)
    elif generate:
        raise ValueError(f"data.generate must be 'demo', 'turbolift:<stage>[:<cases>]' or null, got {generate!r}")


def checked_dataset(
    root: str | Path, cache: str = "none", cache_dir: str | Path | None = None
) -> tuple[DatasetSpec, dict[str, CaseInfo], list[int]]:
    """Discover and check the dataset at ``root`` as training does: one :class:`DatasetError` naming every bad case
    (warnings are logged), then the label value of each class. Returns ``(spec, {case id: info}, label values)``.

    With ``cache="disk"`` the check results are kept beside the preprocessed volumes in ``cache_dir``: later runs,
    folds and plans read no case that did not change.
    """
    spec = discover(root, strict=False)  # dataset.json entry problems are listed with the others
    check = None
    if cache == "disk" and cache_dir is not None:
        from medseg.data.check_cache import cached_check_case

        check = functools.partial(cached_check_case, cache_dir=Path(cache_dir))
    infos, problems = check_dataset(spec, check=check)
    for p in problems:
        if p.severity == "warning":
            log.warning(str(p))
    raise_on_errors(problems, Path(root))
    found = set().union(*(i.label_values for i in infos.values()))
    label_values = class_values(spec.labels, found, str(Path(root) / "dataset.json"))
    for value in unused_classes(spec.labels, found):
        log.warning("dataset.json declares label %d (%s) but no label file contains it", value, spec.labels[value])
    return spec, infos, label_values


def worker_context() -> Any:
    """The multiprocessing context of the loader workers: the default one, unless this process runs under a
    launcher whose own start method torch cannot use (joblib's ``loky`` in ``hydra/launcher=joblib`` jobs: torch
    fails with ``'Process' object has no attribute 'env'``); then ``fork`` on Linux, ``spawn`` elsewhere."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method in (None, "fork", "spawn", "forkserver"):
        return None
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


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
        iters_per_epoch: training steps per epoch, the training cases drawn at random with replacement (nnU-Net: 250);
            None = one pass over the training cases per epoch.
        pos_fraction: share of patches centred on foreground.
        val_fraction: share of training cases held out for validation (seeded).
        seed: split seed.
        num_workers: data-loader workers (also the threads that fill the caches); None = min(2, CPUs − 1) when
            training on CPU (the training needs the cores too), min(8, CPUs per GPU − 1) when training on CUDA.
        cache: where the deterministic preprocessing is cached: ``memory`` (MONAI CacheDataset, rebuilt by every run
            and fold), ``disk`` (load, RAS, resample, crop, and MRI's per-case z-score as ``.npy`` files under
            ``cache_dir``, built once and read back memory-mapped by later epochs, folds and runs; CT's dataset
            normalisation runs on top) or ``none``. ``true``/``false`` (old configs) = memory/none.
        cache_dir: root of the disk caches (None: ``$MEDSEG_CACHE/preprocessed``).
        pin_memory: page-locked batches for faster host→GPU copies; None = when the trainer runs on CUDA.
        prefetch_factor: batches each worker loads ahead (num_workers > 0).
        augment: the augmentation (config group ``data/augment``: probabilities and ranges, see
            :mod:`medseg.data.augment`); None = none.
        num_classes / in_channels: filled in from the dataset when None.
    """

    def __init__(
        self,
        root: str,
        generate: str | None = None,
        spatial_dims: int = 3,
        spacing: list[float] | None = None,
        modality: str = "auto",
        patch_size: list[int] = (96, 96, 96),  # type: ignore[assignment]
        patch_size_2d: list[int] = (256, 256),  # type: ignore[assignment]
        batch_size: int = 2,
        samples_per_volume: int = 1,
        pos_fraction: float = 0.33,
        val_fraction: float = 0.2,
        seed: int = 12345,
        num_workers: int | None = None,
        cache: str | bool = "disk",
        cache_dir: str | None = None,
        pin_memory: bool | None = None,
        prefetch_factor: int = 2,
        augment: dict[str, Any] | None = None,
        num_classes: int | None = None,
        in_channels: int | None = None,
        iters_per_epoch: int | None = None,
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
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.cache = cache_mode(cache)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 or null (automatic), got {num_workers}")
        if prefetch_factor < 1:
            raise ValueError(f"data.prefetch_factor must be >= 1, got {prefetch_factor}")
        self.pin_memory, self.prefetch_factor = pin_memory, prefetch_factor
        self._datasets: dict[str, tuple[Any, Any]] = {}
        self.augment = dict(augment or {})
        if iters_per_epoch is not None and iters_per_epoch < 1:
            raise ValueError(
                f"data.iters_per_epoch must be >= 1 or null (one pass over the cases), got {iters_per_epoch}"
            )
        self.iters_per_epoch = iters_per_epoch
        self.num_classes, self.in_channels = num_classes, in_channels
        self.spec: DatasetSpec | None = None
        self.split: dict[str, list[str]] = {}
        self.stats: dict[str, float] | None = None
        self.label_values: list[int] | None = None
        self.largest_resampled: tuple[float, str] | None = None

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
        spec, infos, self.label_values = checked_dataset(self.root, self.cache, self.cache_dir)
        self.spec = spec
        self.modality = spec.modality if self.modality_opt == "auto" else self.modality_opt.upper()
        if self.spacing is None:
            self.spacing = [float(s) for s in np.median([i.spacing for i in infos.values()], axis=0)]
        target = float(np.prod(self.spacing))
        # the largest case after resampling (voxels): checked against the memory budget before anything resamples
        self.largest_resampled = max(
            (float(np.prod(i.shape[:3], dtype=np.float64) * np.prod(i.spacing)) / target, cid)
            for cid, i in infos.items()
        )
        if self.num_classes is None:
            self.num_classes = len(self.label_values)
        elif self.num_classes != len(self.label_values):
            raise DatasetError(
                f"data.num_classes={self.num_classes} but the labels have {len(self.label_values)} classes "
                f"(values {self.label_values}, background included): drop the override or fix the labels"
            )
        first = spec.cases[0]
        self.in_channels = self.in_channels or (case_channels(first, infos[first["id"]]) if infos else 1)
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
            "label_values": self.label_values,
            "in_channels": self.in_channels,
            "channel_names": list(spec.channels),  # dataset.json's modality / channel_names, in channel order
            "intensity_stats": self.stats,
        }

    def _items(self, ids: list[str]) -> list[dict[str, Any]]:
        assert self.spec is not None, "call prepare_dataset() first"
        by_id = {c["id"]: c for c in self.spec.cases}
        return [{"image": by_id[i]["image"], "label": by_id[i]["label"], "case": i} for i in ids]

    def disk_cache(self) -> tuple[DiskCache, int]:
        """The disk cache of this dataset and preprocessing (``data.cache=disk``) and how many transforms it stores."""
        assert self.spacing is not None, "call prepare_dataset() first"
        n_cached, settings = disk_cached(self.spacing, self.modality)
        return DiskCache(self.cache_dir, self.root, settings), n_cached

    def prepare_data(self) -> None:
        """``data.cache=disk``: preprocess every case that is not cached yet (Lightning: once per node, rank 0)."""
        if self.cache == "disk" and self.spec is not None:
            ids = sorted(set(self.split.get("train", [])) | set(self.split.get("val", [])))
            cache, n_cached = self.disk_cache()
            build = Compose(preprocess(self.spacing or [], self.modality, self.stats)[:n_cached])
            cache.ensure(self._items(ids), build, threads=max(1, self.workers()))

    def setup(self, stage: str | None = None) -> None:
        assert self.spacing is not None
        t_val = val_transforms(self.spacing, self.modality, self.stats, self.label_values)
        self.val_ds = self._dataset("val", t_val)
        if stage in (None, "fit"):
            t_train = train_transforms(
                self.spacing,
                self.modality,
                self.stats,
                self.patch,
                self.samples_per_volume,
                self.pos_fraction,
                self.augment,
                self.label_values,
            )
            self.train_ds = self._dataset("train", t_train)

    def _dataset(self, part: str, transform: Compose) -> Any:
        """The dataset of one split part; reused by later ``setup`` calls (validation after fit) when unchanged."""
        key = (self.cache, tuple(self.split[part]), tuple(self.spacing or ()), self.modality, repr(self.stats))
        if part in self._datasets and self._datasets[part][0] == key:
            return self._datasets[part][1]
        items = self._items(self.split[part])
        if self.cache == "memory":
            ds: Any = CacheDataset(items, transform, num_workers=self.workers(), progress=False)
        elif self.cache == "disk":
            cache, n_cached = self.disk_cache()
            ds = DiskCacheDataset(items, transform, cache, n_cached=n_cached)
            ds.cache.ensure(items, ds.build, threads=max(1, self.workers()))  # no-op after prepare_data
        else:
            ds = Dataset(items, transform)
        self._datasets[part] = (key, ds)
        return ds

    def _on_cuda(self) -> bool:
        """Whether the attached trainer runs on a CUDA device."""
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        return bool(torch.cuda.is_available() and device is not None and device.type == "cuda")

    def _pin_memory(self) -> bool:
        return bool(self.pin_memory) if self.pin_memory is not None else self._on_cuda()

    def workers(self) -> int:
        """Loader workers: ``num_workers``, or the automatic choice when it is None (see the class docstring)."""
        if self.num_workers is not None:
            return self.num_workers
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if self._on_cuda():
            per_gpu = cpus // max(1, int(getattr(self.trainer, "world_size", 1) or 1))
            return max(1, min(8, per_gpu - 1))
        return max(0, min(2, cpus - 1))

    def train_dataloader(self) -> DataLoader:
        workers = self.workers()
        per_step = self.batch_size // self.samples_per_volume  # volumes loaded per step
        sampler = None
        if self.iters_per_epoch is not None:  # nnU-Net's epochs: a fixed number of steps, cases drawn at random
            sampler = RandomSampler(self.train_ds, replacement=True, num_samples=self.iters_per_epoch * per_step)
        return DataLoader(
            self.train_ds,
            batch_size=per_step,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            pin_memory=self._pin_memory(),
            drop_last=False,
            multiprocessing_context=worker_context() if workers > 0 else None,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_ds, batch_size=1, num_workers=0, pin_memory=self._pin_memory())
