"""DataWaitMonitor: the fraction of step time spent waiting for data, its logging and its warning."""

import csv
import logging
import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from medseg.training.callbacks import DataWaitMonitor


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeModule:
    def __init__(self) -> None:
        self.logged: list[tuple[str, float]] = []

    def log(self, name: str, value: float, **kwargs) -> None:
        self.logged.append((name, value))


def _epoch(cb: DataWaitMonitor, clock: FakeClock, trainer, module, waits: list[float], steps: list[float]) -> None:
    cb.on_train_epoch_start(trainer, module)
    for i, (wait, step) in enumerate(zip(waits, steps, strict=True)):
        clock.now += wait
        cb.on_train_batch_start(trainer, module, None, i)
        clock.now += step
        cb.on_train_batch_end(trainer, module, None, None, i)
    clock.now += 5.0  # validation after the last batch: not part of the step time
    cb.on_train_epoch_end(trainer, module)


def test_fraction_per_epoch_with_a_fake_clock(caplog):
    clock, module = FakeClock(), FakeModule()
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0)
    cb = DataWaitMonitor(warn_above=0.3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="medseg.training.callbacks"):
        _epoch(cb, clock, trainer, module, waits=[2.0, 1.0, 1.0], steps=[1.0, 1.0, 2.0])  # 4 of 8 s: first epoch
        assert "bottleneck" not in caplog.text  # the first epoch (worker start-up) alone does not warn
        _epoch(cb, clock, trainer, module, waits=[0.5, 0.5], steps=[2.0, 2.0])  # 1 of 5 s
        assert "bottleneck" not in caplog.text
        _epoch(cb, clock, trainer, module, waits=[3.0, 3.0], steps=[1.0, 1.0])  # 6 of 8 s
        _epoch(cb, clock, trainer, module, waits=[3.0, 3.0], steps=[1.0, 1.0])
    assert cb.history == pytest.approx([0.5, 0.2, 0.75, 0.75])
    assert [v for k, v in module.logged if k == "data_wait_fraction"] == pytest.approx(cb.history)
    assert caplog.text.count("bottleneck") == 1  # one warning per run
    assert "data.num_workers" in caplog.text and "data.cache=disk" in caplog.text
    assert cb.summary == {"data_wait_fraction": pytest.approx(0.55), "data_wait_fraction_last": 0.75}


def test_single_slow_epoch_warns_at_train_end(caplog):
    clock, module = FakeClock(), FakeModule()
    trainer = SimpleNamespace(is_global_zero=True, current_epoch=0)
    cb = DataWaitMonitor(clock=clock)
    with caplog.at_level(logging.WARNING, logger="medseg.training.callbacks"):
        _epoch(cb, clock, trainer, module, waits=[1.0, 1.0], steps=[0.1, 0.1])
        cb.on_train_end(trainer, module)
    assert caplog.text.count("bottleneck") == 1
    assert DataWaitMonitor().summary == {"data_wait_fraction": None, "data_wait_fraction_last": None}


class SlowDataset(Dataset):
    def __init__(self, delay: float, n: int = 6) -> None:
        self.delay, self.n = delay, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        time.sleep(self.delay)
        return torch.randn(32)


class Model(BoringModel):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def train_dataloader(self) -> DataLoader:
        return DataLoader(SlowDataset(self.delay), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(SlowDataset(0.0, n=2), batch_size=2)


def test_logged_to_metrics_csv_in_a_real_run(tmp_path, caplog):
    cb = DataWaitMonitor()
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=[cb],
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        log_every_n_steps=1,
    )
    with caplog.at_level(logging.WARNING, logger="medseg.training.callbacks"):
        trainer.fit(Model(delay=0.05))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    logged = [float(r["data_wait_fraction"]) for r in rows if r.get("data_wait_fraction")]
    assert logged == pytest.approx(cb.history) and len(logged) == 3
    # 2 items x 50 ms per batch against a boring linear layer: almost all of the step time is waiting
    assert min(logged) > 0.5 and caplog.text.count("bottleneck") == 1
