"""Crash-safe outputs of a training run: atomic checkpoint files, a ``last.ckpt`` refreshed every epoch, and a CSV log
that a resumed run appends to.

Lightning writes a checkpoint through ``fsspec``: a temporary file in the system temp folder that is then moved over
the target — a copy in place when ``/tmp`` is another file system (the usual case on clusters), so a kill or a full
disk mid-copy leaves a truncated ``last.ckpt``. ``AtomicCheckpointIO`` writes a temporary file next to the target,
flushes it to disk and renames it over the target (``os.replace``): a reader sees the old file or the new one, never
a mix. It refuses to overwrite a checkpoint with non-finite weights, and loads with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from medseg.fileio import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic (temporary file in the same folder + ``os.replace``)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own handling
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        _check_finite(checkpoint, path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            atomic_write_bytes(path, buffer.getbuffer())
        except OSError as err:
            raise OSError(
                f"cannot save checkpoint {path} ({type(err).__name__}: {err}); the previous {path.name}, if any, "
                "is unchanged"
            ) from err

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load with ``weights_only=True`` unless a caller explicitly asks otherwise."""
        return super().load_checkpoint(path, map_location, weights_only=True if weights_only is None else weights_only)


def _check_finite(checkpoint: dict[str, Any], path: Path) -> None:
    for name, value in (checkpoint.get("state_dict") or {}).items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise FloatingPointError(
                f"refusing to save {path}: parameter {name!r} holds NaN/Inf (training diverged); "
                f"the previous {path.name}, if any, is kept"
            )


class ModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, except that ``save_last`` writes ``last.ckpt`` at the end of every training
    epoch (Lightning only refreshes it when a top-k checkpoint is saved, so a killed run would resume from its best
    epoch, and a finished run would not look finished). A hard kill loses at most the epoch in progress."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skipped if saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and continues it (Lightning's writer deletes it when a run resumes)."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(next(csv.reader(fh), []))


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, except that a resumed run appends to ``metrics.csv`` instead of deleting it.

    Epochs re-run after a hard kill (those after the last checkpoint) appear twice; the later rows are the ones the
    final model saw.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, ExperimentWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def finished_epochs(path: str | Path) -> int | None:
    """Epochs a checkpoint has completed (its 0-based ``epoch`` + 1); None when it cannot be read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["epoch"]) + 1
    except Exception:  # noqa: BLE001 - any unreadable file means "unknown"
        return None


def checkpoint_note(path: Path) -> str:
    """What a user can resume from after a failure: ``path`` and its epoch, or that nothing was saved yet."""
    if not path.is_file():
        return f"no checkpoint was saved yet in {path.parent}"
    done = finished_epochs(path)
    if done is None:
        return f"{path} cannot be read"
    return f"{path} (after epoch {done}) is intact; fix the cause and re-run the same command to resume from it"
