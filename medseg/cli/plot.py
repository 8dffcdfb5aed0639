"""``medseg plot RUN_DIR [-o OUT_PNG]``: training curves of a train, CV or Turbolift run."""

from __future__ import annotations

import argparse

from medseg.cli._output import guarded, out

SUMMARY = "training curves (train, CV, Turbolift)"
USAGE = "medseg plot RUN_DIR [-o OUT_PNG]"


def run(args: list[str]) -> int:
    from medseg.viz import plot_training_curves

    parser = argparse.ArgumentParser(prog="medseg plot", description="Training curves of a train/CV/Turbolift run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (logs/metrics.csv, fold_<k>/, stage_*/)")
    parser.add_argument("-o", "--output", metavar="OUT_PNG", default=None, help="default RUN_DIR/training_curves.png")
    ns = parser.parse_args(args)
    out.print(str(guarded("plot", lambda: plot_training_curves(ns.run_dir, ns.output))), markup=False)
    return 0
