"""What the Hydra commands do once Hydra has composed the config: quiet third-party logging, run the workflow,
print its summary, draw the training curves."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from rich.markup import escape

from medseg.cli._output import err, guarded


def run_workflow(command: str, workflow: Callable[[Any], Any], summary: Callable[[Any, str], None], cfg: Any) -> None:
    """``workflow(cfg)`` with user errors as one line, then ``summary(result, run_dir)`` and the curves."""
    from medseg.config import record_overrides
    from medseg.quiet import quiet_third_party

    quiet_third_party()
    record_overrides(cfg, _hydra_overrides())
    if command in ("train", "cv"):
        from medseg.cli.plan import print_plan
        from medseg.planning.auto import plan_run
        from medseg.run_dir import RunDir

        if command == "cv":  # cv.folds and a splits file are checked before planning writes plan.yaml
            from medseg.workflows.cv import cv_splits

            guarded(command, lambda: cv_splits(cfg, RunDir(cfg.paths.output_dir), pending=[]))
        plan = guarded(command, lambda: plan_run(cfg, RunDir(cfg.paths.output_dir)))
        if plan is not None:
            where = RunDir(cfg.paths.output_dir).plan
            print_plan(plan, cfg, where=f"plan: {where} (edit it and re-run in this run directory to change it)")
    result = guarded(command, lambda: workflow(cfg))
    summary(result, cfg.paths.output_dir)
    plot_curves(cfg.paths.output_dir)


def plot_curves(run_dir: Any) -> None:
    """Write the training curves of a finished run; a failure only warns (the run itself succeeded)."""
    if os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        return  # DDP: rank 0 draws
    try:
        from medseg.viz import plot_training_curves

        path = plot_training_curves(run_dir)
    except Exception as error:  # noqa: BLE001 - a picture must never fail a finished run
        err.print(
            f"[yellow]medseg: warning: training curves not drawn: {escape(f'{type(error).__name__}: {error}')}[/]"
        )
        return
    err.print(f"training curves: {escape(str(path))}")


def _hydra_overrides() -> list[str]:
    """The command line's ``key=value`` overrides of this Hydra job (a multirun job's own values included)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except ValueError:  # not inside a Hydra job
        return []
