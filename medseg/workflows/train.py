"""``medseg train``: one training run → run dir with config.yaml, checkpoints/, logs/, metrics.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, open_dict

from medseg.config import build, resolved_yaml
from medseg.data.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """Trainer from ``cfg.trainer`` with callbacks/loggers from their groups; precision auto-picked when null."""
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = [build(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    kwargs: dict[str, Any] = {"callbacks": callbacks, "logger": loggers or False, **overrides}
    if cfg.trainer.get("precision") is None:
        on_gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("auto", "gpu", "cuda")
        kwargs["precision"] = "bf16-mixed" if on_gpu else "32-true"
    return build(cfg.trainer, **kwargs)


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint:
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, ModelCheckpoint):
            return cb
    raise ValueError("callbacks.model_checkpoint is required (it selects the best checkpoint by val_dice)")


def prepare(cfg: DictConfig, run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Build the data module, check the dataset and write the data-derived keys back into ``cfg``."""
    dm = build(cfg.data)
    info = dm.prepare_dataset(run_dir / "splits.json")
    with open_dict(cfg):
        cfg.data.num_classes, cfg.data.in_channels, cfg.data.spacing = dm.num_classes, dm.in_channels, dm.spacing
    info["roi_size"] = dm.roi_size
    info["spatial_dims"] = dm.spatial_dims
    return dm, info


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as configured; returns the metrics written to ``metrics.json``."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, info = prepare(cfg, run_dir)
    atomic_write_text(run_dir / "config.yaml", resolved_yaml(cfg))
    atomic_write_json(run_dir / "preprocessing.json", info)
    module = build(cfg.model, roi_size=dm.roi_size)
    trainer = build_trainer(cfg)
    last = run_dir / "checkpoints" / "last.ckpt"
    resume_from = str(last) if cfg.get("resume", True) and last.is_file() else None
    if resume_from:
        log.info("resuming from %s", resume_from)
    start = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    seconds = time.time() - start
    best = _checkpoint_callback(trainer).best_model_path
    # best.ckpt is saved at validation end (0-based epoch inside); without any validation during fit, use last.ckpt.
    best_epoch = int(torch.load(best, map_location="cpu", weights_only=True)["epoch"]) + 1 if best else None
    best = best or str(last)
    trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
    per_class = module.last_val["per_class"]
    metrics = {
        "val_dice": float(sum(per_class) / max(len(per_class), 1)),
        "val_dice_per_class": dict(zip(_class_names(dm), per_class, strict=False)),
        "val_per_case": dict(zip(module.last_val["cases"], module.last_val["per_case"], strict=False)),
        "best_epoch": best_epoch or int(trainer.current_epoch),
        "best_checkpoint": str(Path(best).relative_to(run_dir)),
        "epochs": int(trainer.current_epoch),
        "train_seconds": round(seconds, 2),
        "n_train": len(dm.split["train"]),
        "n_val": len(dm.split["val"]),
        "network": cfg.model.net._target_,
        "spatial_dims": dm.spatial_dims,
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _class_names(dm: Any) -> list[str]:
    labels = dm.spec.labels if dm.spec is not None else {}
    return [labels.get(c, f"class_{c}") for c in range(1, dm.num_classes)]
