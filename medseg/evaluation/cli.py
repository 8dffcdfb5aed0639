"""``medseg evaluate`` and ``medseg compare``: argparse front ends, rich tables, atomic JSON outputs.

Both return an exit code: 0 on success, 1 on an input problem (missing folder, no matching case, geometry
mismatch, missing summary/metric); argparse itself exits with 2 on bad options.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from medseg.data.io import atomic_write_json

err_console = Console(stderr=True, soft_wrap=True)


def evaluate_parser() -> argparse.ArgumentParser:
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


def compare_parser() -> argparse.ArgumentParser:
    """Options of ``medseg compare``."""
    parser = argparse.ArgumentParser(
        prog="medseg compare",
        description="Paired per-case comparison of two runs (cv_summary.json): mean difference B − A, bootstrap "
        "95% CI, Wilcoxon signed-rank and Mann–Whitney U p-values.",
    )
    parser.add_argument("run_a", type=Path, help="run folder (or its cv_summary.json) of method A")
    parser.add_argument("run_b", type=Path, help="run folder (or its cv_summary.json) of method B")
    parser.add_argument(
        "--metric",
        default="dice_mean",
        help="per-case value: dice_mean, hd95_mean, nsd_mean or <class>_<metric> (default dice_mean)",
    )
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="OUT_JSON", help="write the result as JSON")
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
    console = Console()
    console.print(table)
    for side, names in result["unmatched"].items():
        if names:
            console.print(
                f"[yellow]{len(names)} unmatched ({side}):[/] {', '.join(names[:10])}"
                + (" …" if len(names) > 10 else "")
            )
    console.print(
        f"NSD tolerance {result['nsd_tolerance_mm']} mm · mean ± sample std over cases · "
        f"report: {out_json} (+ {out_json.with_suffix('.csv').name})"
    )


def run_evaluate(argv: list[str]) -> int:
    """``medseg evaluate -p PRED_DIR -l LABEL_DIR [-o OUT_JSON] [--classes 1 2] [--nsd-tolerance MM]``."""
    from medseg.evaluation.aggregate import write_per_case_csv
    from medseg.evaluation.metrics import evaluate_folder

    args = evaluate_parser().parse_args(argv)
    out = args.output if args.output is not None else args.pred / "evaluation.json"
    try:
        result = evaluate_folder(args.pred, args.labels, args.classes, args.nsd_tolerance)
    except (OSError, ValueError) as err:
        err_console.print(f"[bold red]medseg evaluate: error:[/] {err}")
        return 1
    atomic_write_json(out, result)
    write_per_case_csv(result, out.with_suffix(".csv"))
    print_evaluation(result, out)
    return 0


def print_comparison(result: dict[str, Any]) -> None:
    """One table: n, means of A and B, mean difference B − A, its 95% CI and the two p-values."""
    table = Table(title=f"medseg compare — {result['metric']} (difference = B − A)")
    for col in ("n", "mean A", "mean B", "mean diff", "95% CI", "Wilcoxon p", "Mann–Whitney p"):
        table.add_column(col, justify="right", no_wrap=col == "95% CI")
    lo, hi = result["ci95"]
    table.add_row(
        str(result["n"]),
        _f(result["mean_a"]),
        _f(result["mean_b"]),
        f"{result['mean_diff']:+.4f}",
        f"[{lo:+.4f}, {hi:+.4f}]",
        f"{result['wilcoxon_p']:.4g}",
        f"{result['mannwhitney_p']:.4g}",
    )
    console = Console()
    console.print(table)
    console.print(f"A: {result['run_a']}\nB: {result['run_b']}")
    for key, label in (("only_a", "only in A"), ("only_b", "only in B"), ("undefined", "undefined value, left out")):
        if result[key]:
            console.print(f"[yellow]{len(result[key])} case(s) {label}:[/] {', '.join(result[key][:10])}")


def run_compare(argv: list[str]) -> int:
    """``medseg compare RUN_A RUN_B [--metric dice_mean] [-o OUT_JSON]``."""
    from medseg.evaluation.stats import compare_runs

    args = compare_parser().parse_args(argv)
    try:
        result = compare_runs(args.run_a, args.run_b, args.metric, n_boot=args.n_boot, seed=args.seed)
    except (OSError, ValueError) as err:
        err_console.print(f"[bold red]medseg compare: error:[/] {err}")
        return 1
    if args.output is not None:
        atomic_write_json(args.output, result)
    print_comparison(result)
    return 0
