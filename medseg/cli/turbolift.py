"""``medseg turbolift``: sequential training across a chain of tasks."""

from __future__ import annotations

from typing import Any

from medseg.cli import _hydra
from medseg.cli._workflow import run_workflow
from medseg.run_dir import contents

SUMMARY = "sequential training across tasks"
USAGE = "medseg turbolift [stages=...] [key=value ...]"
HELP = f"""usage: {USAGE}

Turbolift: train one network serially on a chain of related tasks; the first stage trains on all of its data, every
later stage runs K-fold cross-validation where fold k starts from fold k of the previous stage. Folds are drawn per
patient across the chain and audited for leakage before training. The final stage is compared with training from
scratch, direct transfer and the reversed chain on the same folds (paired tests). With no options it runs the
built-in synthetic CT -> CBCT -> CBCT-TST chain; --config-name turbolift_study runs its power study.

main options:
  cv.folds=K                     folds of every CV stage (default 3)
  trainer.max_epochs=N           epochs per stage and fold
  stages=[...]                   your own chain (name, cv, data, overrides per stage; docs/turbolift.md)
  baselines.scratch=false        skip a baseline (scratch, direct, reverse)
  patients.regex='(\\d+)$'        which case ids are the same patient (or patients.csv=FILE)
  hydra.run.dir=PATH             where the run directory goes

example:
  medseg turbolift hydra.run.dir=runs/turbolift

see the whole config:  medseg turbolift --cfg job    Hydra's own options:  medseg turbolift --hydra-help
writes into RUN_DIR: {contents("turbolift")}"""


def task(cfg: Any) -> None:
    from medseg.cli.summaries import print_turbolift_summary
    from medseg.workflows.turbolift import turbolift

    run_workflow("turbolift", turbolift, print_turbolift_summary, cfg)


def run(args: list[str]) -> int:
    return _hydra.run("turbolift", args, task, HELP)
