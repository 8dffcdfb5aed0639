"""``medseg <command> [args] [key=value overrides]``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

console = Console(stderr=True)

USAGE = """usage: medseg <command> [options] [key=value ...]

commands:
  train       train one model                          medseg train [model/net=unet] [data=nifti data.root=PATH] ...
  cv          k-fold cross-validation                   (planned)
  turbolift   sequential training across tasks          (planned)
  predict     segment NIfTI/NRRD/MHA volumes            (planned)
  evaluate    metrics of predictions vs labels          (planned)
  compare     paired test between two runs              (planned)
  check-data  validate a dataset                        (planned)
  export      ONNX / TorchScript export                 (planned)

Hydra options work after the command: --cfg job, --help, -m (multirun), --config-dir DIR, hydra.run.dir=PATH.
"""


def _hydra_command(config_name: str, task: Callable[[Any], Any], args: list[str]) -> None:
    import hydra

    from medseg.config import config_dir

    sys.argv = [f"medseg {config_name}", *args]
    hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)()


def _train_task(cfg: Any) -> None:
    from medseg.data.discovery import DatasetError
    from medseg.quiet import quiet_third_party
    from medseg.report import print_train_summary
    from medseg.workflows.train import train

    quiet_third_party()
    try:
        metrics = train(cfg)
    except (DatasetError, ValueError, FloatingPointError) as err:
        console.print(f"[bold red]medseg train: error:[/] {err}")
        raise SystemExit(1) from None
    print_train_summary(metrics, cfg.paths.output_dir)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medseg`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = args[0], args[1:]
    if command == "train":
        _hydra_command("train", _train_task, rest)
    elif command in ("cv", "turbolift", "predict", "evaluate", "compare", "check-data", "export"):
        console.print(f"medseg {command}: planned, not built yet (see the README's CLI contract)")
        raise SystemExit(2)
    else:
        console.print(f"[red]unknown command {command!r}[/]\n{USAGE}")
        raise SystemExit(2)


if __name__ == "__main__":
    main()
