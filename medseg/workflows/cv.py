"""``medseg cv``: K-fold cross-validation, fold after fold, resumable; summaries over folds and over cases."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from medseg.config import build
from medseg.data.datamodule import generate_dataset
from medseg.data.discovery import discover
from medseg.planning.auto import plan_run
from medseg.run_dir import RunDir
from medseg.workflows.train import run_cv_splits, train

log = logging.getLogger(__name__)


def cv_splits(cfg: DictConfig, run: RunDir, pending: list | None = None) -> dict[str, Any]:
    """The run's splits: a user file (validated), an earlier one, or a new seeded K-fold (with ``pending``: not
    written yet, but left there to be written by the caller)."""
    dm = build(cfg.data)
    generate_dataset(dm.generate, dm.root)
    ids = [c["id"] for c in discover(dm.root).cases]
    in_use = any(fold.state is not None for _, fold in run.folds())
    return run_cv_splits(cfg, run, ids, dm.val_fraction, in_use, pending)


def cross_validate(cfg: DictConfig, init_for_fold: Callable[[int], str | None] | None = None) -> dict[str, Any]:
    """Train and test every fold in ``<run>/fold_<k>/`` (finished folds are skipped), then aggregate.

    Args:
        cfg: the composed config (``cv.*`` and everything ``train`` reads).
        init_for_fold: fold index → checkpoint that fold starts from (Turbolift), or None.
    """
    run = RunDir(cfg.paths.output_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    pending: list = []  # the split is drawn (and cv.folds checked) first, written once the plan succeeded
    splits = cv_splits(cfg, run, pending)
    plan_run(cfg, run)  # one plan for every fold (the fingerprint covers all cases), written to the CV run
    for path, obj in pending:
        run.write_json(path, obj)
    for k in range(len(splits["folds"])):
        fold = run.fold(k)
        if fold.is_finished():
            log.info("fold %d already finished: %s", k, fold.path)
            continue
        fold_cfg = copy.deepcopy(cfg)
        with open_dict(fold_cfg):
            fold_cfg.paths.output_dir = str(fold.path)
            fold_cfg.cv.fold = k
            fold_cfg.cv.splits_file = str(run.splits)
            if init_for_fold is not None:
                fold_cfg.init_from = init_for_fold(k)
        log.info("fold %d of %d → %s", k, len(splits["folds"]), fold.path)
        train(fold_cfg)
    return aggregate(run.path)


def fold_results(run: RunDir) -> list[dict[str, Any]]:
    """Test results of every finished fold under ``run`` (``fold_<k>/`` or multirun job folders)."""
    results = []
    for name, path in run.test_results():
        data = run.read_json(path)
        if data.get("fold") is None:
            data["fold"] = int(name.removeprefix("fold_")) if name[-1].isdigit() else 0
        results.append(data)
    return sorted(results, key=lambda r: r["fold"])


def aggregate(run_dir: str | Path) -> dict[str, Any]:
    """Summarise whatever folds have finished: the CV summary, per-case CSV and plot, and the Markdown report."""
    from medseg.evaluation.aggregate import aggregate_cv, write_per_case_csv
    from medseg.evaluation.report import write_report_md
    from medseg.viz import plot_per_case_dice

    run = RunDir(run_dir)
    folds = fold_results(run)
    if not folds:
        raise ValueError(f"{run.path}: no finished fold (no fold holds test results yet)")
    summary = aggregate_cv(folds)
    run.write_json(run.cv_summary, summary)
    write_per_case_csv(summary, run.per_case_csv)
    plot_per_case_dice(summary, run.per_case_png)
    write_report_md(summary, run.report_md, title=f"Cross-validation: {run.name}")
    return summary
