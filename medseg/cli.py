"""``medseg <command> [args] [key=value overrides]``."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True)

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


def _train_task(cfg: Any) -> None:
    from medseg.report import print_train_summary
    from medseg.workflows.train import train

    metrics = _guarded("train", lambda: _checked(train, cfg))
    print_train_summary(metrics, cfg.paths.output_dir)
    _plot_curves(cfg.paths.output_dir)


def _cv_task(cfg: Any) -> None:
    from medseg.report import print_cv_summary
    from medseg.workflows.cv import cross_validate

    summary = _guarded("cv", lambda: _checked(cross_validate, cfg))
    print_cv_summary(summary, cfg.paths.output_dir)
    _plot_curves(cfg.paths.output_dir)


def _turbolift_task(cfg: Any) -> None:
    from medseg.report import print_turbolift_summary
    from medseg.workflows.turbolift import turbolift

    summary = _guarded("turbolift", lambda: _checked(turbolift, cfg))
    print_turbolift_summary(summary, cfg.paths.output_dir)
    _plot_curves(cfg.paths.output_dir)


def _cv_aggregate(args: list[str]) -> None:
    from medseg.report import print_cv_summary
    from medseg.workflows.cv import aggregate

    if len(args) != 1:
        console.print("usage: medseg cv aggregate RUN_DIR")
        raise SystemExit(2)
    print_cv_summary(_guarded("cv aggregate", lambda: aggregate(args[0])), args[0])


def _evaluate_command(args: list[str]) -> None:
    """``medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON] [--classes 1 2] [--nsd-tolerance MM]``."""
    from medseg.evaluation.cli import run_evaluate

    code = run_evaluate(args)
    if code:
        raise SystemExit(code)


def _compare_command(args: list[str]) -> None:
    """``medseg compare RUN_A RUN_B [--metric dice_mean] [-o OUT_JSON]``."""
    from medseg.evaluation.cli import run_compare

    code = run_compare(args)
    if code:
        raise SystemExit(code)


def _check_data_command(args: list[str]) -> None:
    """``medseg check-data data.root=PATH [--json] [-o REPORT.json] [--atol A]``: exit 1 when any error is found."""
    from medseg.workflows.check_data import run_check_data

    code = _guarded("check-data", lambda: run_check_data(args))
    if code:
        raise SystemExit(code)


def _plot_command(args: list[str]) -> None:
    """``medseg plot RUN_DIR [-o OUT_PNG]``: training curves of a train, CV or Turbolift run."""
    import argparse

    from medseg.viz import plot_training_curves

    parser = argparse.ArgumentParser(prog="medseg plot", description="Training curves of a train/CV/Turbolift run.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (logs/metrics.csv, fold_<k>/, stage_*/)")
    parser.add_argument("-o", "--output", metavar="OUT_PNG", default=None, help="default RUN_DIR/training_curves.png")
    ns = parser.parse_args(args)
    path = _guarded("plot", lambda: plot_training_curves(ns.run_dir, ns.output))
    print(path)


def run_predict_command(args: list[str]) -> int:
    """``medseg predict -m RUN_DIR -i FILE_OR_DIR -o OUT_DIR [...]``."""
    from medseg.inference.cli import run_predict
    from medseg.quiet import quiet_third_party

    quiet_third_party()
    return run_predict(args)


def run_export_command(args: list[str]) -> int:
    """``medseg export -m RUN_DIR --format onnx|torchscript [-o FILE]``."""
    from medseg.export import run_export
    from medseg.quiet import quiet_third_party

    quiet_third_party()
    return run_export(args)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medseg`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("MEDSEG_COMMAND"):
        args = [os.environ["MEDSEG_COMMAND"], *args]  # a DDP worker started by Lightning with the overrides only
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command == "train":
        _hydra_command("train", _train_task, rest)
    elif command == "cv" and rest[:1] == ["aggregate"]:
        _cv_aggregate(rest[1:])
    elif command == "cv":
        _hydra_command("cv", _cv_task, rest)
    elif command == "evaluate":
        _evaluate_command(rest)
    elif command == "compare":
        _compare_command(rest)
    elif command == "predict":
        code = run_predict_command(rest)
        if code:
            raise SystemExit(code)
    elif command == "check-data":
        _check_data_command(rest)
    elif command == "turbolift":
        _hydra_command("turbolift", _turbolift_task, rest)
    elif command == "plot":
        _plot_command(rest)
    elif command == "export":
        code = run_export_command(rest)
        if code:
            raise SystemExit(code)
    else:
        console.print(f"[red]unknown command {escape(command)!r}[/]\n{escape(USAGE)}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
