"""DataLoader options of SegDataModule: pinned memory on CUDA, persistent workers, prefetch; setup reuse."""

from types import SimpleNamespace

import pytest
import torch

from medseg.data.datamodule import SegDataModule
from medseg.data.splits import train_val_split


def _dm(root, **kw) -> SegDataModule:
    dm = SegDataModule(root=str(root), spacing=[2.0] * 3, patch_size=[16] * 3, cache="none", **kw)
    dm.prepare_dataset(lambda ids: train_val_split(ids, 0.34, 0))
    dm.setup("fit")
    return dm


def _attach(dm: SegDataModule, device: str) -> None:
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))  # type: ignore[assignment]


def test_pin_memory_follows_the_training_device(tiny_dataset, monkeypatch):
    dm = _dm(tiny_dataset, num_workers=0)
    assert dm.train_dataloader().pin_memory is False  # no trainer
    _attach(dm, "cpu")
    assert dm.train_dataloader().pin_memory is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _attach(dm, "cuda:0")
    assert dm._pin_memory() is True
    forced = _dm(tiny_dataset, num_workers=0, pin_memory=False)
    _attach(forced, "cuda:0")
    assert forced._pin_memory() is False


def test_workers_are_persistent_and_prefetch(tiny_dataset):
    loader = _dm(tiny_dataset, num_workers=2, prefetch_factor=3).train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and loader.prefetch_factor == 3
    loader = _dm(tiny_dataset, num_workers=0).train_dataloader()
    assert loader.num_workers == 0 and not loader.persistent_workers
    with pytest.raises(ValueError, match="prefetch_factor"):
        SegDataModule(root=str(tiny_dataset), prefetch_factor=0)


def test_setup_again_reuses_the_datasets(tiny_dataset):
    dm = _dm(tiny_dataset, num_workers=0)
    train, val = dm.train_ds, dm.val_ds
    dm.setup("validate")  # trainer.validate() after fit: no re-caching
    dm.setup("fit")
    assert dm.train_ds is train and dm.val_ds is val
    dm.prepare_dataset(lambda ids: train_val_split(ids, 0.5, 1))  # another split: new datasets
    dm.setup("fit")
    assert dm.train_ds is not train
