"""One-screen summaries printed at the end of ``train``, ``cv`` and ``turbolift``."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from medseg.cli._output import out
from medseg.run_dir import contents


def print_train_summary(metrics: dict[str, Any], run_dir: str) -> None:
    """Validation Dice per class of the best checkpoint, and where the run lives."""
    table = Table(title="medseg train — best checkpoint", show_header=True)
    table.add_column("class")
    table.add_column("val Dice", justify="right")
    for name, value in metrics["val_dice_per_class"].items():
        table.add_row(name, "– (absent in every case)" if value is None else f"{value:.4f}")
    table.add_row("[bold]mean foreground[/]", f"[bold]{metrics['val_dice']:.4f}[/]")
    out.print(table)
    m = metrics
    wait = m.get("data_wait_fraction")
    waiting = "" if wait is None else f" · {100 * wait:.0f}% of step time waiting for data"
    out.print(
        f"best epoch {m['best_epoch']} of {m['epochs']} · {m['n_train']} train / {m['n_val']} val cases · "
        f"{m['train_seconds']:.0f} s{waiting}\nrun dir: {run_dir}  ({contents('train', run_dir)})"
    )
    if m.get("validated_in_training") is False:
        out.print(
            "[yellow]no validation ran during training[/] (trainer.max_epochs < trainer.check_val_every_n_epoch): "
            "the checkpoint is the final weights, validated once after training, not chosen among epochs"
        )


def print_cv_summary(summary: dict[str, Any], run_dir: str) -> None:
    """Per-fold Dice and the mean ± std over folds and over cases."""
    table = Table(title="medseg cv — test folds", show_header=True)
    for col in ("fold", "cases", "Dice", "HD95 (mm)"):
        table.add_column(col, justify="right")
    for fold in summary["folds"]:
        hd = fold.get("hd95_mean")
        table.add_row(
            str(fold["fold"]), str(fold["n_cases"]), f"{fold['dice_mean']:.4f}", "-" if hd is None else f"{hd:.2f}"
        )
    out.print(table)
    out.print(
        f"Dice over folds {summary['dice_mean']:.4f} ± {summary['dice_std']:.4f} · over cases "
        f"{summary['dice_case_mean']:.4f} ± {summary['dice_case_std']:.4f}\n"
        f"HD95 at the worst case (a mask empty): {summary.get('hd95_worst_case', 0)} (case, class) pair(s) · "
        f"absent in both masks (excluded): {summary.get('absent_in_both', 0)}\n"
        f"run dir: {run_dir}  ({contents('cv', run_dir)})"
    )
    _unvalidated(summary)


def _unvalidated(summary: dict[str, Any], what: str = "") -> None:
    folds = summary.get("unvalidated_folds") or []
    if folds:
        out.print(
            f"[yellow]{what}fold(s) {', '.join(map(str, folds))}: no validation ran during training[/]; their "
            "checkpoint is the final weights (validated once after training, not chosen among epochs)"
        )


def print_turbolift_summary(summary: dict[str, Any], run_dir: str) -> None:
    """Each stage's result, then the final-stage table: method → Dice mean ± std with p-values vs Turbolift."""
    for st in summary["stages"]:
        if st.get("dice_mean") is not None:
            out.print(f"stage {st['name']}: Dice {st['dice_mean']:.4f} ± {st['dice_std']:.4f} (folds)")
        elif st.get("mode") == "per_fold":
            left = ", ".join(f"fold {k}: {n}" for k, n in st["excluded_cases"].items())
            out.print(
                f"stage {st['name']}: one model per fold (its patients are tested later; cases left out: {left}), "
                f"mean val Dice {st['val_dice']:.4f}"
            )
        else:
            out.print(f"stage {st['name']}: one model, val Dice {st['val_dice']:.4f}")
    table = Table(title=f"final stage {summary['final_stage']}: Turbolift vs baselines")
    for col in (
        "method",
        "Dice (folds)",
        "Dice (cases)",
        "Turbolift − method [95% CI]",
        "Wilcoxon p",
        "Mann–Whitney p",
    ):
        table.add_column(col, justify="right")
    notes: dict[str, None] = {}
    for method, row in summary["methods"].items():
        notes.update(dict.fromkeys(row.get("notes") or []))
        delta = (
            "-" if "mean_diff" not in row else f"{row['mean_diff']:+.4f} [{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}]"
        )
        table.add_row(
            method,
            f"{row['dice_mean']:.4f} ± {row['dice_std']:.4f}",
            f"{row['dice_case_mean']:.4f} ± {row['dice_case_std']:.4f}",
            delta,
            "-" if "wilcoxon_p" not in row else f"{row['wilcoxon_p']:.4g}",
            "-" if "mannwhitney_p" not in row else f"{row['mannwhitney_p']:.4g}",
        )
    out.print(table)
    for note in notes:
        out.print(f"[yellow]note:[/] {note}")
    audit = summary.get("leakage_audit") or {}
    if audit:
        checked = sum(len(rows) for rows in audit["chains"].values())
        verdict = "clean" if audit["clean"] else f"[red]{audit['leaks']} leak(s)[/]"
        chains = len(audit["chains"])
        out.print(f"leakage audit ({checked} folds of {chains} chains, test patients vs ancestors): {verdict}")
    out.print(f"run dir: {run_dir}  ({contents('turbolift', run_dir)})")
