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
    from medseg.quiet import quiet_third_party

    quiet_third_party()
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
