"""``medseg cv``: K-fold cross-validation, fold after fold, resumable; summaries over folds and over cases."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from medseg.config import build
from medseg.data.datamodule import generate_dataset
from medseg.data.discovery import discover
from medseg.data.io import atomic_write_json
from medseg.data.splits import load_or_create_cv_splits
from medseg.workflows.train import train

log = logging.getLogger(__name__)


def cv_splits(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The run's ``splits.json``: a user file (validated), an earlier one, or a new seeded K-fold."""
    dm = build(cfg.data)
    generate_dataset(dm.generate, dm.root)
    ids = [c["id"] for c in discover(dm.root).cases]
    return load_or_create_cv_splits(
        run_dir / "splits.json", ids, cfg.cv.folds, cfg.cv.seed, dm.val_fraction, cfg.cv.get("splits_file")
    )


def cross_validate(cfg: DictConfig, init_for_fold: Callable[[int], str | None] | None = None) -> dict[str, Any]:
    """Train and test every fold in ``<run>/fold_<k>/`` (finished folds are skipped), then aggregate.

    Args:
        cfg: the composed config (``cv.*`` and everything ``train`` reads).
        init_for_fold: fold index → checkpoint that fold starts from (Turbolift), or None.
    """
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = cv_splits(cfg, run_dir)
    for k in range(len(splits["folds"])):
        fold_dir = run_dir / f"fold_{k}"
        if (fold_dir / "test_metrics.json").is_file():
            log.info("fold %d already finished: %s", k, fold_dir)
            continue
        fold_cfg = copy.deepcopy(cfg)
        with open_dict(fold_cfg):
            fold_cfg.paths.output_dir = str(fold_dir)
            fold_cfg.cv.fold = k
            fold_cfg.cv.splits_file = str(run_dir / "splits.json")
            if init_for_fold is not None:
                fold_cfg.init_from = init_for_fold(k)
        log.info("fold %d of %d → %s", k, len(splits["folds"]), fold_dir)
        train(fold_cfg)
    return aggregate(run_dir)


def fold_results(run_dir: Path) -> list[dict[str, Any]]:
    """``test_metrics.json`` of every finished fold under ``run_dir`` (``fold_<k>/`` or multirun job folders)."""
    results = []
    for path in sorted(run_dir.glob("*/test_metrics.json")):
        data = json.loads(path.read_text())
        if data.get("fold") is None:
            data["fold"] = int(path.parent.name.removeprefix("fold_")) if path.parent.name[-1].isdigit() else 0
        results.append(data)
    return sorted(results, key=lambda r: r["fold"])


def aggregate(run_dir: str | Path) -> dict[str, Any]:
    """Summarise whatever folds have finished: cv_summary.json, per_case.csv, per_case_dice.png, report.md."""
    from medseg.evaluation.aggregate import aggregate_cv, write_per_case_csv
    from medseg.evaluation.plots import plot_per_case_dice, write_report_md

    run_dir = Path(run_dir)
    folds = fold_results(run_dir)
    if not folds:
        raise ValueError(f"{run_dir}: no finished fold (no */test_metrics.json)")
    summary = aggregate_cv(folds)
    atomic_write_json(run_dir / "cv_summary.json", summary)
    write_per_case_csv(summary, run_dir / "per_case.csv")
    plot_per_case_dice(summary, run_dir / "per_case_dice.png")
    write_report_md(summary, run_dir / "report.md", title=f"Cross-validation: {run_dir.name}")
    return summary
