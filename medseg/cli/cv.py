"""``medseg cv``: K-fold cross-validation; ``medseg cv aggregate RUN_DIR``: summarise the folds that finished."""

from __future__ import annotations

import argparse
from typing import Any

from medseg.cli import _hydra
from medseg.cli._output import guarded
from medseg.cli._workflow import run_workflow
from medseg.run_dir import contents

SUMMARY = "k-fold cross-validation"
USAGE = "medseg cv cv.folds=5 [key=value ...]; medseg cv aggregate RUN_DIR"
HELP = f"""usage: {USAGE}

K-fold cross-validation of the train config: seeded folds written to the run, every fold trained in fold_<k>/
(choosing its checkpoint on its own validation cases, never on the test fold), its test cases predicted on the
labels' own grid and scored with Dice, IoU, HD95 and NSD; summaries over folds and over cases. Re-running the same
command resumes: finished folds are skipped.

main options (besides every `medseg train` option):
  cv.folds=K                     number of folds (default 5)
  cv.seed=N                      seed of the split
  cv.splits_file=PATH            your own split file (medseg's format or nnU-Net's splits_final.json)
  hydra.run.dir=PATH             where the run directory goes

examples:
  medseg cv cv.folds=3 hydra.run.dir=runs/cv3
  medseg train -m cv.fold=0,1,2 cv.folds=3 hydra.sweep.dir=runs/cv3    (parallel folds; then:)
  medseg cv aggregate runs/cv3

see the whole config:  medseg cv --cfg job           Hydra's own options:  medseg cv --hydra-help
writes into RUN_DIR: {contents("cv")}"""


def task(cfg: Any) -> None:
    from medseg.cli.summaries import print_cv_summary
    from medseg.workflows.cv import cross_validate

    run_workflow("cv", cross_validate, print_cv_summary, cfg)


def run(args: list[str]) -> int:
    if args[:1] == ["aggregate"]:
        return aggregate(args[1:])
    return _hydra.run("cv", args, task, HELP)


def aggregate(args: list[str]) -> int:
    """``medseg cv aggregate RUN_DIR``: summarise the folds that finished."""
    from medseg.cli.summaries import print_cv_summary

    parser = argparse.ArgumentParser(
        prog="medseg cv aggregate",
        description="Summarise the finished folds of a CV run (folds run as parallel jobs, or an interrupted run): "
        f"writes {contents('cv').split(', ', 2)[2]} into RUN_DIR.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the CV run directory (fold_<k>/ or multirun job folders)")
    ns = parser.parse_args(args)

    def work() -> None:
        from medseg.workflows.cv import aggregate as aggregate_folds

        print_cv_summary(aggregate_folds(ns.run_dir), ns.run_dir)

    guarded("cv aggregate", work)
    return 0
