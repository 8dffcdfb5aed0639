"""Lightning callbacks of medseg: how much of the training step time is spent waiting for data."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class DataWaitMonitor(L.Callback):
    """Logs ``data_wait_fraction`` per training epoch: time waiting for the data loader / total step time.

    The wait is the time from the start of the epoch to the first batch and from the end of each training batch to the
    start of the next (the data loader producing the batch, and the host-to-device copy); the total runs from the start
    of the epoch to the end of its last training batch (validation excluded). The value is logged through the module's
    loggers (``logs/metrics.csv``); ``history`` keeps one value per epoch of this session for ``metrics.json``.

    Args:
        warn_above: log one warning when an epoch's fraction exceeds it (the first epoch only counts when it is the
            only one: it includes starting the loader workers).
        clock: the time source (tests inject a fake one).
    """

    def __init__(self, warn_above: float = 0.3, clock: Callable[[], float] = time.perf_counter) -> None:
        self.warn_above, self.clock = warn_above, clock
        self.history: list[float] = []
        self.warned = False
        self._epoch_start: float | None = None
        self._last_end = 0.0
        self._wait = 0.0
        self._batches = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_end = self.clock()
        self._wait, self._batches = 0.0, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if self._epoch_start is not None:
            self._wait += self.clock() - self._last_end

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._last_end = self.clock()
        self._batches += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start is None or self._batches == 0:
            return
        total = self._last_end - self._epoch_start
        fraction = min(max(self._wait / total, 0.0), 1.0) if total > 0 else 0.0
        self.history.append(fraction)
        self._epoch_start = None
        pl_module.log("data_wait_fraction", fraction, on_step=False, on_epoch=True, sync_dist=True)
        if len(self.history) > 1:
            self._maybe_warn(trainer, fraction)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(self.history) == 1:
            self._maybe_warn(trainer, self.history[0])

    def _maybe_warn(self, trainer: L.Trainer, fraction: float) -> None:
        if self.warned or fraction <= self.warn_above:
            return
        self.warned = True
        if trainer.is_global_zero:
            log.warning(
                "data loading is the bottleneck: %.0f%% of the training step time was spent waiting for data "
                "(epoch %d); try more loader workers (data.num_workers) or the persistent preprocessed cache "
                "(data.cache=disk)",
                100 * fraction,
                trainer.current_epoch,
            )

    @property
    def summary(self) -> dict[str, float | None]:
        """``data_wait_fraction`` (mean over the epochs of this session) and ``data_wait_fraction_last``."""
        if not self.history:
            return {"data_wait_fraction": None, "data_wait_fraction_last": None}
        mean = sum(self.history) / len(self.history)
        return {"data_wait_fraction": round(mean, 4), "data_wait_fraction_last": round(self.history[-1], 4)}


def find_callback(trainer: L.Trainer, kind: type) -> Any:
    """The trainer's first callback of type ``kind``, or None."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)  # type: ignore[attr-defined]
