"""``medseg <command> [args] [key=value overrides]``."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True)

USAGE = """usage: medseg <command> [options] [key=value ...]

commands:
  train       train one model                          medseg train [model/net=unet] [data=nifti data.root=PATH] ...
  cv          k-fold cross-validation                   medseg cv cv.folds=5 [...]; medseg cv aggregate RUN_DIR
  turbolift   sequential training across tasks          medseg turbolift [stages=...] [key=value ...]
  predict     segment NIfTI/NRRD/MHA volumes            medseg predict -m RUN_DIR -i FILE_OR_DIR -o OUT_DIR
  evaluate    metrics of predictions vs labels          medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON]
  compare     paired test between two runs              medseg compare RUN_A RUN_B [--metric dice_mean]
  check-data  validate a dataset, list every problem   medseg check-data data.root=PATH [--json] [-o REPORT.json]
  export      ONNX / TorchScript export + parity check  medseg export -m RUN_DIR --format onnx|torchscript [-o FILE]
  plot        training curves (train, CV, Turbolift)    medseg plot RUN_DIR [-o OUT_PNG]

Hydra options work after the command: --cfg job, --help, -m (multirun), --config-dir DIR, hydra.run.dir=PATH.
"""


def _hydra_command(config_name: str, task: Callable[[Any], Any], args: list[str]) -> None:
    import hydra

    from medseg.config import config_dir
    from medseg.validate import check_creatable

    for arg in args:  # an unwritable run dir: one clear line now rather than Hydra's traceback later
        key, sep, value = arg.partition("=")
        if sep and key in ("hydra.run.dir", "hydra.sweep.dir"):
            if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":  # Hydra's quoted value
                value = value[1:-1]
            _guarded(config_name, functools.partial(check_creatable, value, key))
    # Keep argv[0] (Lightning's DDP launcher re-runs it for ranks > 0) and remember the command for those ranks.
    os.environ["MEDSEG_COMMAND"] = config_name
    sys.argv = [sys.argv[0], *args]
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()


def _guarded(name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; known user errors become one red line and exit code 1 instead of a traceback."""
    from medseg.data.discovery import DatasetError
    from medseg.quiet import quiet_third_party

    quiet_third_party()
    known = (DatasetError, ValueError, FloatingPointError, OSError)
    try:
        return fn()
    except Exception as err:
        # Hydra wraps a constructor's error (e.g. "data.spacing must be ...") in an InstantiationException
        cause = err.__cause__ if type(err).__name__ == "InstantiationException" else err
        if not isinstance(cause, known):
            raise
        console.print(f"[bold red]medseg {name}: error:[/] {escape(str(cause))}")
        raise SystemExit(1) from None


def _checked(workflow: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``workflow(cfg)`` after checking that the configured loggers' packages are installed."""
    from medseg.training.loggers import check_loggers

    check_loggers(cfg.get("logger"))
    return workflow(cfg)


def _plot_curves(run_dir: Any) -> None:
    """Write ``training_curves.png`` of a finished run; a failure only warns (the run itself succeeded)."""
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        return  # DDP: rank 0 draws
    try:
        from medseg.viz import plot_training_curves

        path = plot_training_curves(run_dir)
    except Exception as err:  # noqa: BLE001 - a picture must never fail a finished run
        console.print(
            f"[yellow]medseg: warning: training curves not drawn: {escape(f'{type(err).__name__}: {err}')}[/]"
        )
        return
    console.print(f"training curves: {escape(str(path))}")


def _attr(target: str) -> Any:
    """``"package.module:name"`` → the object, imported only when a command needs it (keeps ``medseg -h`` fast)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _workflow_task(name: str, workflow: str, report: str) -> Callable[[Any], None]:
    """A Hydra command: check the loggers, run ``workflow(cfg)``, print its summary, draw the training curves."""

    def task(cfg: Any) -> None:
        result = _guarded(name, lambda: _checked(_attr(workflow), cfg))
        _attr(report)(result, cfg.paths.output_dir)
        _plot_curves(cfg.paths.output_dir)

    return task


_train_task = _workflow_task("train", "medseg.workflows.train:train", "medseg.report:print_train_summary")
_cv_task = _workflow_task("cv", "medseg.workflows.cv:cross_validate", "medseg.report:print_cv_summary")
_turbolift_task = _workflow_task(
    "turbolift", "medseg.workflows.turbolift:turbolift", "medseg.report:print_turbolift_summary"
)
HYDRA_COMMANDS: dict[str, Callable[[Any], None]] = {"train": _train_task, "cv": _cv_task, "turbolift": _turbolift_task}

# argparse commands: name → "module:function" taking the arguments and returning the exit code
ARGV_COMMANDS = {
    "cv aggregate": "medseg.cli:_cv_aggregate",
    "predict": "medseg.inference.cli:run_predict",
    "evaluate": "medseg.evaluation.cli:run_evaluate",
    "compare": "medseg.evaluation.cli:run_compare",
    "check-data": "medseg.workflows.check_data:run_check_data",
    "export": "medseg.export:run_export",
    "plot": "medseg.cli:_plot",
}


def _cv_aggregate(args: list[str]) -> int:
    """``medseg cv aggregate RUN_DIR``: summarise the folds that finished."""
    from medseg.report import print_cv_summary
    from medseg.workflows.cv import aggregate

    if len(args) != 1:
        console.print("usage: medseg cv aggregate RUN_DIR")
        return 2
    print_cv_summary(aggregate(args[0]), args[0])
    return 0


def _plot(args: list[str]) -> int:
    """``medseg plot RUN_DIR [-o OUT_PNG]``: training curves of a train, CV or Turbolift run."""
    import argparse

    from medseg.viz import plot_training_curves

    parser = argparse.ArgumentParser(prog="medseg plot", description="Training curves of a train/CV/Turbolift run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (logs/metrics.csv, fold_<k>/, stage_*/)")
    parser.add_argument("-o", "--output", metavar="OUT_PNG", default=None, help="default RUN_DIR/training_curves.png")
    ns = parser.parse_args(args)
    print(plot_training_curves(ns.run_dir, ns.output))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medseg`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("MEDSEG_COMMAND"):
        args = [os.environ["MEDSEG_COMMAND"], *args]  # a DDP worker started by Lightning with the overrides only
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command == "cv" and rest[:1] == ["aggregate"]:
        command, rest = "cv aggregate", rest[1:]
    if command in HYDRA_COMMANDS:
        _hydra_command(command, HYDRA_COMMANDS[command], rest)
    elif command in ARGV_COMMANDS:
        code = _guarded(command, lambda: _attr(ARGV_COMMANDS[command])(rest))
        if code:
            raise SystemExit(code)
    else:
        console.print(f"[red]unknown command {escape(command)!r}[/]\n{escape(USAGE)}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
