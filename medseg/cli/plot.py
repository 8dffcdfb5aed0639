"""``medseg plot RUN_DIR [-o OUT_PNG]``: training curves of a train, CV or Turbolift run."""

from __future__ import annotations

import argparse

from medseg.cli._output import guarded, out
from medseg.run_dir import RunDir

SUMMARY = "training curves (train, CV, Turbolift)"
USAGE = "medseg plot RUN_DIR [-o OUT_PNG]"


def run(args: list[str]) -> int:
    from medseg.viz import plot_training_curves

    parser = argparse.ArgumentParser(prog="medseg plot", description="Training curves of a train/CV/Turbolift run.")
    run = RunDir("/")
    logs = run.log_csv.relative_to(run.path)
    parser.add_argument("run_dir", metavar="RUN_DIR", help=f"run directory ({logs}, fold_<k>/, stage_*/)")
    default = run.training_curves.name
    parser.add_argument("-o", "--output", metavar="OUT_PNG", default=None, help=f"default RUN_DIR/{default}")
    ns = parser.parse_args(args)
    out.print(str(guarded("plot", lambda: plot_training_curves(ns.run_dir, ns.output))), markup=False)
    return 0
