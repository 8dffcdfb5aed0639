"""``medseg check-data data.root=PATH [--json] [-o REPORT.json] [--atol A]``: list every problem of a dataset at once.

Prints a table (or a JSON report) and exits 1 when any error is found, 0 when there are none (warnings allowed), 2 on
usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from medseg.cli._hydra import strip_quotes
from medseg.cli._output import describe, fail, out

SUMMARY = "validate a dataset, list every problem"
USAGE = "medseg check-data data.root=PATH [--json] [-o REPORT.json]"


def print_report(report: dict[str, Any]) -> None:
    """A rich table of the problems (messages printed verbatim, never as markup) and a one-line summary."""
    root = Path(report["root"])
    if report["problems"]:
        table = Table(title=Text(f"medseg check-data {root}"), show_lines=False)
        for column in ("severity", "case", "file", "problem"):
            table.add_column(column, overflow="fold")
        for p in report["problems"]:
            style = "bold red" if p["severity"] == "error" else "yellow"
            table.add_row(
                Text(p["severity"], style=style), Text(p["case"]), Text(_short(p["path"], root)), Text(p["message"])
            )
        out.print(table)
    layout = f"{report['layout']} layout, " if report["layout"] else ""
    summary = (
        f"data.root={root}: {layout}{report['cases']} case(s), {report['ok_cases']} usable; "
        f"{report['errors']} error(s), {report['warnings']} warning(s)"
    )
    out.print(Text(summary, style="green" if report["ok"] else "bold red"))


def _short(path: str, root: Path) -> str:
    """``path`` relative to the dataset root when it lies inside it (judged lexically: links are not followed)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return path if rel.startswith("..") else rel


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg check-data",
        description="Validate a dataset (MSD, nnU-Net raw or images/ + labels/ folders) and list every problem. "
        "Exit code 1 when any error is found.",
    )
    parser.add_argument("overrides", nargs="*", metavar="data.root=PATH", help="the dataset folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout instead of a table")
    parser.add_argument("-o", "--output", metavar="REPORT.json", help="also write the JSON report to this file")
    parser.add_argument("--atol", type=float, default=1e-3, help="tolerance of affine comparisons (default 1e-3)")
    return parser


def _root_from(overrides: list[str], parser: argparse.ArgumentParser) -> str:
    root = None
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+")
        if sep and key == "data.root" and value:
            root = strip_quotes(value)
        elif not (sep and key == "data" and value == "nifti"):  # `data=nifti` copied from a train command is fine
            parser.error(f"unexpected argument {item!r}: check-data takes data.root=PATH")
    if root is None:
        parser.error("data.root=PATH is required")
    return root  # type: ignore[return-value]  # parser.error exits


def run(args: list[str]) -> int:
    """The ``medseg check-data`` command; returns the exit code."""
    from medseg.fileio import atomic_write_json
    from medseg.workflows.check_data import check_data

    parser = _parser()
    ns = parser.parse_args(args)
    logging.getLogger("nibabel").setLevel(logging.CRITICAL)  # header repairs it logs become our own messages
    report = check_data(_root_from(ns.overrides, parser), ns.atol)
    if ns.output:
        try:
            atomic_write_json(ns.output, report)
        except OSError as error:
            return fail("check-data", describe(error))
    if ns.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        print_report(report)
    return 0 if report["ok"] else 1
