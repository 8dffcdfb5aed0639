"""``medseg evaluate``: per-case metrics of a folder of predictions against reference labels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from medseg.cli._output import describe, fail, out

SUMMARY = "metrics of predictions vs labels"
USAGE = "medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON]"


def parser() -> argparse.ArgumentParser:
    """Options of ``medseg evaluate``."""
    parser = argparse.ArgumentParser(
        prog="medseg evaluate",
        description="Per-case Dice, IoU, HD95, NSD and volumes of predicted label files against reference labels "
        "(files matched by case name; both must share a voxel grid).",
    )
    parser.add_argument(
        "-p", "--pred", required=True, type=Path, metavar="PRED_DIR", help="folder of predicted label files"
    )
    parser.add_argument(
        "-l", "--labels", required=True, type=Path, metavar="LABEL_DIR", help="folder of reference label files"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="OUT_JSON",
        help="report JSON (default PRED_DIR/evaluation.json); a per-case CSV is written beside it",
    )
    parser.add_argument(
        "--classes",
        type=int,
        nargs="+",
        default=None,
        help="foreground label values (default: every non-zero value found)",
    )
    parser.add_argument(
        "--nsd-tolerance",
        type=float,
        default=2.0,
        metavar="MM",
        help="tolerance of the normalised surface Dice in mm (default 2.0)",
    )
    return parser


def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def _pm(stats: dict[str, Any], digits: int = 4) -> str:
    return "–" if stats["mean"] is None else f"{_f(stats['mean'], digits)} ± {_f(stats['std'], digits)}"


def print_evaluation(result: dict[str, Any], out_json: Path) -> None:
    """One table: per-class and mean Dice / HD95 / NSD over cases, then where the report went."""
    summary = result["summary"]
    table = Table(title=f"medseg evaluate — {summary['n_cases']} cases")
    for col in ("class", "Dice", "HD95 (mm)", "HD95 undef.", "NSD"):
        table.add_column(col, justify="left" if col == "class" else "right", no_wrap=col != "class")
    for name, s in summary["per_class"].items():
        table.add_row(name, _pm(s["dice"]), _pm(s["hd95"], 2), str(s["hd95"]["n_undefined"]), _pm(s["nsd"]))
    case = {m: {"mean": summary[f"{m}_case_mean"], "std": summary[f"{m}_case_std"]} for m in ("dice", "hd95", "nsd")}
    table.add_row(
        "[bold]all classes[/]",
        _pm(case["dice"]),
        _pm(case["hd95"], 2),
        str(summary["hd95_undefined"]),
        _pm(case["nsd"]),
    )
    out.print(table)
    for side, names in result["unmatched"].items():
        if names:
            out.print(
                f"[yellow]{len(names)} unmatched ({side}):[/] {', '.join(names[:10])}"
                + (" …" if len(names) > 10 else "")
            )
    out.print(
        f"NSD tolerance {result['nsd_tolerance_mm']} mm · mean ± sample std over cases · "
        f"report: {out_json} (+ {out_json.with_suffix('.csv').name})"
    )


def run(argv: list[str]) -> int:
    """``medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON] [--classes 1 2] [--nsd-tolerance MM]``."""
    from medseg.evaluation.aggregate import write_per_case_csv
    from medseg.evaluation.metrics import evaluate_folder
    from medseg.fileio import atomic_write_json

    args = parser().parse_args(argv)
    report = args.output if args.output is not None else args.pred / "evaluation.json"
    try:
        result = evaluate_folder(args.pred, args.labels, args.classes, args.nsd_tolerance)
        atomic_write_json(report, result)
        write_per_case_csv(result, report.with_suffix(".csv"))
    except (OSError, ValueError) as error:
        return fail("evaluate", describe(error))
    print_evaluation(result, report)
    return 0
