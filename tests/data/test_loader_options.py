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


@pytest.mark.parametrize(
    ("cpus", "device", "world", "expected"),
    [(2, "cpu", 1, 1), (1, "cpu", 1, 0), (16, "cpu", 1, 2), (16, "cuda:0", 1, 8), (16, "cuda:0", 4, 3),
     (4, "cuda:0", 1, 3), (2, "cuda:0", 2, 1)],
)  # fmt: skip
def test_automatic_workers(cpus, device, world, expected, monkeypatch):
    # num_workers=None: a few workers beside CPU training, up to 8 per GPU (data loading must keep a GPU fed)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    dm = SegDataModule(root="unused")
    assert dm.workers() == min(2, cpus - 1)  # no trainer attached: the CPU rule
    _attach(dm, device)
    dm.trainer.world_size = world  # type: ignore[union-attr]
    assert dm.workers() == expected
    assert SegDataModule(root="unused", num_workers=5).workers() == 5
    with pytest.raises(ValueError, match="num_workers"):
        SegDataModule(root="unused", num_workers=-1)


def test_setup_again_reuses_the_datasets(tiny_dataset):
    dm = _dm(tiny_dataset, num_workers=0)
    train, val = dm.train_ds, dm.val_ds
    dm.setup("validate")  # trainer.validate() after fit: no re-caching
    dm.setup("fit")
    assert dm.train_ds is train and dm.val_ds is val
    dm.prepare_dataset(lambda ids: train_val_split(ids, 0.5, 1))  # another split: new datasets
    dm.setup("fit")
    assert dm.train_ds is not train
