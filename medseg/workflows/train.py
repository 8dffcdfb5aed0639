"""``medseg train``: one training run → a run directory (``medseg.run_dir``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, open_dict

from medseg.config import absolute_paths, build, resolved_yaml
from medseg.data.splits import load_or_create_cv_splits, load_or_create_split
from medseg.fileio import atomic_write_bytes
from medseg.planning.auto import plan_run
from medseg.run_dir import FAILED, FINISHED, RUNNING, RunDir
from medseg.training.callbacks import DataWaitMonitor, find_callback
from medseg.training.loggers import check_loggers
from medseg.training.safe_io import AtomicCheckpointIO, checkpoint_note, finished_epochs
from medseg.training.transfer import init_from_checkpoint
from medseg.validate import check_resume, check_writable, validate_config

log = logging.getLogger(__name__)


def build_trainer(cfg: DictConfig, run: RunDir | None = None, **overrides: Any) -> L.Trainer:
    """Trainer from ``cfg.trainer`` with callbacks/loggers from their groups; precision auto-picked when null.

    The checkpoint callback writes ``best``/``last`` into ``run``'s ``checkpoints/`` (the run directory's layout is
    ``medseg.run_dir``'s, not a config setting)."""
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    if run is not None:
        for cb in callbacks:
            if isinstance(cb, ModelCheckpoint):
                cb.dirpath, cb.filename = str(run.checkpoints), run.best_checkpoint.stem
    loggers = [build(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    kwargs: dict[str, Any] = {"callbacks": callbacks, "logger": loggers or False, **overrides}
    if "plugins" not in cfg.trainer:
        kwargs.setdefault("plugins", [AtomicCheckpointIO()])  # checkpoint files are replaced whole or not at all
    if cfg.trainer.get("precision") is None:
        on_gpu = torch.cuda.is_available() and cfg.trainer.get("accelerator") in ("auto", "gpu", "cuda")
        kwargs["precision"] = "bf16-mixed" if on_gpu else "32-true"
    return build(cfg.trainer, **kwargs)


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint:
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(cb, ModelCheckpoint):
            return cb
    raise ValueError("callbacks.model_checkpoint is required (it selects the best checkpoint by val_dice)")


def run_cv_splits(
    cfg: DictConfig, run: RunDir, ids: list[str], val_fraction: float, in_use: bool, pending: list | None = None
) -> dict[str, Any]:
    """The K-fold split of a run directory by ``cfg.cv`` (``folds``, ``seed``, ``splits_file``, ``inner_val``): the
    one place ``medseg cv`` and a fold's training read or draw it."""
    cv = cfg.cv
    return load_or_create_cv_splits(
        run.splits,
        ids,
        cv.folds,
        cv.seed,
        val_fraction,
        cv.get("splits_file"),
        in_use=in_use,
        pending=pending,
        inner_val=cv.get("inner_val", True),
    )


def split_function(
    cfg: DictConfig, run: RunDir, dm: Any, pending: list | None = None
) -> Callable[[list[str]], dict[str, list[str]]]:
    """Train/val split of a plain run, or fold ``cv.fold`` (train/val/test) of a seeded K-fold split; with
    ``pending`` a new split file is not written yet but left there (written once the config is valid)."""
    cv: Any = cfg.get("cv") or {}
    in_use = run.state is not None  # a model was (being) trained on this run's split
    if cv.get("fold") is None:
        return lambda ids: load_or_create_split(run.splits, ids, dm.val_fraction, dm.seed, in_use, pending)

    def fold_split(ids: list[str]) -> dict[str, list[str]]:
        splits = run_cv_splits(cfg, run, ids, dm.val_fraction, in_use, pending)
        if not 0 <= cv.fold < len(splits["folds"]):
            raise ValueError(f"cv.fold={cv.fold} is outside the {len(splits['folds'])} folds of the split")
        return splits["folds"][cv.fold]

    return fold_split


def prepare(cfg: DictConfig, run: RunDir | Path) -> tuple[Any, dict[str, Any]]:
    """Build the data module, check the dataset and write the data-derived keys back into ``cfg``."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    check_resume(cfg, run)  # another dataset in a finished run dir: refused before its split is even read
    dm = build(cfg.data)
    pending: list = []  # files to write once the config is known to be valid (a failed command writes nothing)
    info = dm.prepare_dataset(split_function(cfg, run, dm, pending))
    with open_dict(cfg):
        cfg.data.num_classes, cfg.data.in_channels, cfg.data.spacing = dm.num_classes, dm.in_channels, dm.spacing
    validate_config(cfg, dm, run)
    for path, obj in pending:
        run.write_json(path, obj)
    info["roi_size"] = dm.roi_size
    info["spatial_dims"] = dm.spatial_dims
    return dm, info


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one model as configured; returns the metrics written to ``metrics.json``.

    The run's state (``run_state.json``) is ``running`` while it trains, then ``finished`` or ``failed`` (with the
    reason): "is this run / fold finished?" has one answer, :meth:`RunDir.is_finished`.
    """
    run = RunDir(cfg.paths.output_dir)
    check_writable(run.path)
    check_loggers(cfg.get("logger"))
    absolute_paths(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    plan_run(cfg, run)  # data=nifti: spacing, levels, patch, batch, budget from the dataset (plan.yaml)
    dm, info = prepare(cfg, run)
    run.mark(RUNNING, command=cfg.get("task_name"))
    try:
        metrics = _fit(cfg, run, dm, info)
    except BaseException as err:
        run.mark(FAILED, error=f"{type(err).__name__}: {' '.join(str(err).split())[:500]}")
        raise
    run.mark(FINISHED, epochs=metrics["epochs"])
    return metrics


def _fit(cfg: DictConfig, run: RunDir, dm: Any, info: dict[str, Any]) -> dict[str, Any]:
    run.write_text(run.config, resolved_yaml(cfg))
    run.write_json(run.preprocessing, info)
    module = build(cfg.model, roi_size=dm.roi_size)
    trainer = build_trainer(cfg, run)
    resume_from, init = _resume_or_init(cfg, module, run)
    start = time.time()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    except FloatingPointError as err:
        raise FloatingPointError(f"{err} ({checkpoint_note(run.last_checkpoint)})") from err
    seconds = time.time() - start
    selection = _validate_final_epoch(cfg, trainer, module, dm, run)
    metrics = _best_metrics(cfg, trainer, module, dm, run)
    metrics.update(selection, train_seconds=round(seconds, 2), init_from=init or _previous_init(run))
    monitor = find_callback(trainer, DataWaitMonitor)
    metrics.update(DataWaitMonitor().summary if monitor is None else monitor.summary)  # None without the callback
    if dm.split.get("test"):
        from medseg.workflows.heldout import evaluate_test_cases

        keys = ("validated_in_training", "checkpoint_selection", "best_epoch")
        metrics["test"] = evaluate_test_cases(run, dm, dm.split["test"], info={k: metrics[k] for k in keys})
    run.write_json(run.metrics, metrics)
    return metrics


def _resume_or_init(cfg: DictConfig, module: Any, run: RunDir) -> tuple[str | None, dict | None]:
    """Resume from ``last.ckpt`` when it exists (and ``resume``), else initialise from ``init_from`` if set."""
    last = run.last_checkpoint
    resume_from = str(last) if cfg.get("resume", True) and last.is_file() else None
    init = None
    if cfg.get("init_from") and not resume_from:
        init = init_from_checkpoint(module, cfg.init_from, strict=cfg.get("init_strict", True))
        run.write_json(run.init_record, init)
    done = finished_epochs(last) if resume_from else 0
    if resume_from:
        log.info("resuming from %s (%s epochs done)", resume_from, done)
    if done and done >= cfg.trainer.max_epochs:
        log.warning(
            "%s: finished (%d epochs): nothing is retrained, the best checkpoint is re-validated", run.path, done
        )
    return resume_from, init


def _validate_final_epoch(cfg: DictConfig, trainer: L.Trainer, module: Any, dm: Any, run: RunDir) -> dict[str, Any]:
    """Validate the final weights when the last epoch was not validated during ``fit`` (``max_epochs`` not a
    multiple of ``check_val_every_n_epoch``); they become ``best.ckpt`` when they score higher than every validated
    epoch, or when no validation ran at all. With ``cv.inner_val=false`` (the validation cases are the test fold)
    nothing is selected: ``best.ckpt`` is the final weights.

    Returns the honesty record for ``metrics.json``: ``validated_in_training`` (False when no validation ran during
    training, so the checkpoint was never chosen among epochs), ``validations_in_training`` and
    ``checkpoint_selection``.
    """
    cb = _checkpoint_callback(trainer)
    epochs = int(trainer.current_epoch)
    every = int(cfg.trainer.get("check_val_every_n_epoch") or 1)
    record: dict[str, Any] = {
        "validated_in_training": bool(cb.best_model_path),
        "validations_in_training": epochs // every,
        "checkpoint_selection": "best validated epoch",
    }
    no_selection = (cfg.get("cv") or {}).get("inner_val") is False and (cfg.get("cv") or {}).get("fold") is not None
    if (epochs % every == 0 and cb.best_model_path and not no_selection) or not run.last_checkpoint.is_file():
        return record
    trainer.validate(module, datamodule=dm, ckpt_path=str(run.last_checkpoint), verbose=False)
    final = float(module.last_val["dice"])
    best = cb.best_model_score
    if no_selection or not cb.best_model_path or best is None or final > float(best):
        atomic_write_bytes(run.best_checkpoint, run.last_checkpoint.read_bytes())  # the final weights are the best
        cb.best_model_path, cb.best_model_score = str(run.best_checkpoint), torch.tensor(final)
        record["checkpoint_selection"] = "final weights" + (
            " (cv.inner_val=false: the validation cases are the test fold, nothing is selected on them)"
            if no_selection
            else " (validated after training)"
        )
    if not record["validated_in_training"]:
        log.warning(
            "%s: no validation ran during training (max_epochs %d, check_val_every_n_epoch %d): the checkpoint is "
            "the final weights, validated once after training, not chosen among epochs",
            run.path,
            epochs,
            every,
        )
    return record


def _best_metrics(cfg: DictConfig, trainer: L.Trainer, module: Any, dm: Any, run: RunDir) -> dict:
    """Re-validate the best checkpoint (the last one when no validation ran during fit) and collect the metrics."""
    best = _checkpoint_callback(trainer).best_model_path
    # the best checkpoint is saved at validation end (0-based epoch inside); without any validation, use the last
    best_epoch = int(torch.load(best, map_location="cpu", weights_only=True)["epoch"]) + 1 if best else None
    best = best or str(run.last_checkpoint)
    trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
    per_class = module.last_val["per_class"]
    return {
        "val_dice": float(module.last_val["dice"]),
        "val_dice_per_class": dict(zip(_class_names(dm), per_class, strict=False)),
        "val_per_case": dict(zip(module.last_val["cases"], module.last_val["per_case"], strict=False)),
        "best_epoch": best_epoch or int(trainer.current_epoch),
        "best_checkpoint": str(Path(best).relative_to(run.path)),
        "epochs": int(trainer.current_epoch),
        "train_seconds": None,
        "init_from": None,
        "n_train": len(dm.split["train"]),
        "n_val": len(dm.split["val"]),
        "network": cfg.model.net._target_,
        "spatial_dims": dm.spatial_dims,
    }


def _previous_init(run: RunDir) -> dict[str, Any] | None:
    """A resumed run keeps the ``init_from`` record of its first start."""
    if run.metrics.is_file():
        return run.read_json(run.metrics).get("init_from")
    return run.read_json(run.init_record) if run.init_record.is_file() else None


def _class_names(dm: Any) -> list[str]:
    labels = dm.spec.labels if dm.spec is not None else {}
    values = dm.label_values or list(range(dm.num_classes))
    return [labels.get(v, f"class_{v}") for v in values[1:]]
