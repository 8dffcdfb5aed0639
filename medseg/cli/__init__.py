"""``medseg <command> [args] [key=value overrides]``: a small dispatcher; one module per command in this package.

Command modules parse arguments and print; the work is done by the library (``medseg.workflows``,
``medseg.inference``, ``medseg.evaluation``, ...). Each module has ``SUMMARY``, ``USAGE`` and ``run(args) -> int``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

from rich.markup import escape

# command → (module, one-line summary, usage); kept here so `medseg --help` imports no command module
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("train", "train one model", "medseg train [model/net=unet] [data=nifti data.root=PATH] ..."),
    "cv": ("cv", "k-fold cross-validation", "medseg cv cv.folds=5 [...]; medseg cv aggregate RUN_DIR"),
    "turbolift": ("turbolift", "sequential training across tasks", "medseg turbolift [stages=...] [key=value ...]"),
    "predict": ("predict", "segment NIfTI/NRRD/MHA volumes", "medseg predict -m RUN_DIR -i FILE_OR_DIR -o OUT"),
    "evaluate": ("evaluate", "metrics of predictions vs labels", "medseg evaluate -p PRED_DIR -l LABEL_DIR"),
    "compare": ("compare", "paired test between two runs", "medseg compare RUN_A RUN_B [--metric dice_mean]"),
    "check-data": ("check_data", "validate a dataset, list every problem", "medseg check-data data.root=PATH"),
    "plan": ("plan", "plan a configuration for a dataset", "medseg plan data.root=PATH [-o PLAN.yaml]"),
    "export": ("export", "torch.export / ONNX / TorchScript + parity", "medseg export -m RUN_DIR --format pt2"),
    "plot": ("plot", "training curves (train, CV, Turbolift)", "medseg plot RUN_DIR [-o OUT_PNG]"),
}


def usage() -> str:
    """The ``medseg --help`` text: one aligned row per command."""
    width = max(len(c) for c in COMMANDS) + 2
    summary = max(len(s) for _, s, _ in COMMANDS.values()) + 2
    rows = [f"  {name:<{width}}{text:<{summary}}{use}" for name, (_, text, use) in COMMANDS.items()]
    return "\n".join(
        [
            "usage: medseg <command> [options] [key=value ...]",
            "",
            "commands:",
            *rows,
            "",
            "medseg <command> --help describes a command. Hydra options work after train/cv/turbolift:",
            "--cfg job (print the config), -m (multirun), --config-dir DIR, hydra.run.dir=PATH.",
            "medseg --version prints the version.",
        ]
    )


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("medseg")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``medseg`` command."""
    from medseg.cli._output import err, out

    args = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get("MEDSEG_COMMAND"):
        args = [os.environ["MEDSEG_COMMAND"], *args]  # a DDP worker started by Lightning with the overrides only
    if not args or args[0] in ("-h", "--help", "help"):
        out.print(usage(), markup=False, highlight=False)
        return
    if args[0] in ("-V", "--version"):
        out.print(f"medseg {version()}", markup=False, highlight=False)
        return
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        err.print(f"[red]medseg: unknown command {escape(command)!r}{hint}[/]\n{escape(usage())}")
        raise SystemExit(2)
    module = importlib.import_module(f"medseg.cli.{COMMANDS[command][0]}")
    code = module.run(rest)
    if code:
        raise SystemExit(code)
