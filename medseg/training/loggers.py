"""Experiment loggers whose package is optional (TensorBoard, MLflow): one clear line before training if missing."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger

# Logger class name → (importable modules, any of which Lightning accepts; the medseg extra that installs one)
OPTIONAL_LOGGERS: dict[str, tuple[tuple[str, ...], str]] = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard"),
    "MLFlowLogger": (("mlflow",), "mlflow"),
}


class LoggerUnavailableError(ValueError):
    """A configured logger's package is not installed."""


def module_available(name: str) -> bool:
    """Whether ``import name`` would find a module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_loggers(logger_cfg: Mapping[str, Any] | None) -> None:
    """Fail before training when a configured logger cannot be built because its package is missing.

    Args:
        logger_cfg: the ``logger`` group of the config (name → ``{_target_: ..., ...}`` or None).

    Raises:
        LoggerUnavailableError: e.g. ``logger=tensorboard needs the 'tensorboard' package:
            pip install 'medseg[tensorboard]'``.
    """
    for name, spec in (logger_cfg or {}).items():
        if not spec:
            continue
        target = str(spec.get("_target_", ""))
        modules, extra = OPTIONAL_LOGGERS.get(target.rsplit(".", 1)[-1], ((), ""))
        if modules and not any(module_available(m) for m in modules):
            raise LoggerUnavailableError(
                f"logger={name} needs the '{modules[0]}' package: pip install 'medseg[{extra}]'"
            )


class MLFlowLogger(_LightningMLFlowLogger):
    """Lightning's ``MLFlowLogger``; a local ``file:`` store is allowed without setting ``MLFLOW_ALLOW_FILE_STORE``.

    MLflow 3 keeps the file store (a folder of plain files, nothing to set up) in maintenance mode and refuses it
    unless ``MLFLOW_ALLOW_FILE_STORE=true``; an explicit setting in the environment wins.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        uri = kwargs.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or ""
        if str(uri).startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().__init__(*args, **kwargs)
