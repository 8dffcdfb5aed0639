"""``medseg evaluate``: per-case metrics of a folder of predictions against reference labels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from medseg.cli._output import describe, fail, out

SUMMARY = "metrics of predictions vs labels"
USAGE = "medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON] [--skip-missing]"


def parser() -> argparse.ArgumentParser:
    """Options of ``medseg evaluate``."""
    parser = argparse.ArgumentParser(
        prog="medseg evaluate",
        description="Per-case Dice, IoU, HD95, NSD and volumes of predicted label files against reference labels "
        "(files matched by case name; both must share a voxel grid). A labelled case without a prediction scores "
        "as a failure (Dice 0, worst-case HD95) unless --skip-missing; a class absent from both files is excluded; "
        "HD95 with one mask empty is the image diagonal (docs/evaluation.md).",
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
        "--dataset-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="dataset.json whose labels name the classes (default: the one in LABEL_DIR or its parent)",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave labelled cases without a prediction out (default: score them as failures, Dice 0)",
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


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (" …" if len(names) > 10 else "")


def print_evaluation(result: dict[str, Any], out_json: Path) -> None:
    """One table: per-class and mean Dice / HD95 / NSD over cases, then where the report went."""
    summary = result["summary"]
    table = Table(title=f"medseg evaluate — {summary['n_cases']} cases")
    for col in ("class", "Dice", "HD95 (mm)", "HD95 worst case", "absent", "NSD"):
        table.add_column(col, justify="left" if col == "class" else "right", no_wrap=col != "class")
    for name, s in summary["per_class"].items():
        table.add_row(
            name,
            _pm(s["dice"]),
            _pm(s["hd95"], 2),
            str(s["hd95"].get("n_worst_case", 0)),
            str(s["dice"]["n_undefined"]),
            _pm(s["nsd"]),
        )
    case = {m: {"mean": summary[f"{m}_case_mean"], "std": summary[f"{m}_case_std"]} for m in ("dice", "hd95", "nsd")}
    table.add_row(
        "[bold]all classes[/]",
        _pm(case["dice"]),
        _pm(case["hd95"], 2),
        str(summary["hd95_worst_case"]),
        str(summary["absent_in_both"]),
        _pm(case["nsd"]),
    )
    out.print(table)
    missing = result["missing_predictions"]
    if missing:
        how = "left out (--skip-missing)" if "skipped" in result["missing_policy"] else "scored as failures (Dice 0)"
        out.print(f"[yellow]{len(missing)} labelled case(s) without a prediction, {how}:[/] {_names(missing)}")
    else:
        out.print("0 labelled cases without a prediction")
    if result["unmatched"]["pred_only"]:
        names = result["unmatched"]["pred_only"]
        out.print(f"[yellow]{len(names)} prediction(s) without a label, not scored:[/] {_names(names)}")
    out.print(
        f"NSD tolerance {result['nsd_tolerance_mm']} mm · mean ± sample std over cases · "
        f"report: {out_json} (+ {out_json.with_suffix('.csv').name})"
    )


def run(argv: list[str]) -> int:
    """``medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON] [--classes 1 2] [--nsd-tolerance MM]``."""
    from medseg.evaluation.aggregate import write_per_case_csv
    from medseg.evaluation.metrics import evaluate_folder, read_label_names
    from medseg.fileio import atomic_write_json

    args = parser().parse_args(argv)
    report = args.output if args.output is not None else args.pred / "evaluation.json"
    try:
        names = None if args.dataset_json is None else read_label_names(args.dataset_json)
        result = evaluate_folder(
            args.pred, args.labels, args.classes, args.nsd_tolerance, names=names, skip_missing=args.skip_missing
        )
        atomic_write_json(report, result)
        write_per_case_csv(result, report.with_suffix(".csv"))
    except (OSError, ValueError) as error:
        return fail("evaluate", describe(error))
    print_evaluation(result, report)
    return 0
