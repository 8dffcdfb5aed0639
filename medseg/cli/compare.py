"""``medseg compare``: a paired per-case test between two runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from medseg.cli._output import describe, fail, out
from medseg.run_dir import RunDir

SUMMARY = "paired test between two runs"
USAGE = "medseg compare RUN_A RUN_B [--metric dice_mean]"
SUMMARY_FILE = RunDir("/").cv_summary.name


def parser() -> argparse.ArgumentParser:
    """Options of ``medseg compare``."""
    parser = argparse.ArgumentParser(
        prog="medseg compare",
        description=f"Paired per-case comparison of two runs ({SUMMARY_FILE}): mean difference B − A, bootstrap "
        "95% CI (BCa, scipy), Wilcoxon signed-rank and Mann–Whitney U p-values, with warnings when too few cases "
        "make them meaningless (docs/evaluation.md).",
    )
    parser.add_argument("run_a", type=Path, help=f"run folder (or its {SUMMARY_FILE}) of method A")
    parser.add_argument("run_b", type=Path, help=f"run folder (or its {SUMMARY_FILE}) of method B")
    parser.add_argument(
        "--metric",
        default="dice_mean",
        help="per-case value: dice_mean, hd95_mean, nsd_mean or <class name>_<metric>, e.g. liver_dice "
        "(default dice_mean)",
    )
    parser.add_argument("--n-boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="OUT_JSON", help="write the result as JSON")
    return parser


def _f(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"


def print_comparison(result: dict[str, Any]) -> None:
    """One table: n, means of A and B, mean difference B − A, its 95% CI and the two p-values."""
    table = Table(title=f"medseg compare — {result['metric']} (difference = B − A)")
    ci = f"95% CI ({result['ci_method']})"
    for col in ("n", "mean A", "mean B", "mean diff", ci, "Wilcoxon p", "Mann–Whitney p"):
        table.add_column(col, justify="right", no_wrap=col == ci)
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
    out.print(table)
    out.print(f"A: {result['run_a']}\nB: {result['run_b']}")
    for key, label in (
        ("only_a", "only in A"),
        ("only_b", "only in B"),
        ("undefined", "without a value (class absent in both masks), left out"),
        ("worst_case_a", "of A at the worst-case HD95 (a mask empty)"),
        ("worst_case_b", "of B at the worst-case HD95 (a mask empty)"),
    ):
        if result.get(key):
            out.print(f"[yellow]{len(result[key])} case(s) {label}:[/] {', '.join(result[key][:10])}")
    for note in result.get("notes", []):
        out.print(f"[yellow]note:[/] {note}")


def run(argv: list[str]) -> int:
    """``medseg compare RUN_A RUN_B [--metric dice_mean] [-o OUT_JSON]``."""
    from medseg.evaluation.stats import compare_runs
    from medseg.fileio import atomic_write_json

    args = parser().parse_args(argv)
    try:
        result = compare_runs(args.run_a, args.run_b, args.metric, n_boot=args.n_boot, seed=args.seed)
        if args.output is not None:
            atomic_write_json(args.output, result)
    except (OSError, ValueError) as error:
        return fail("compare", describe(error))
    print_comparison(result)
    return 0
