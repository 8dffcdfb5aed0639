"""One-screen summaries printed at the end of a command."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_train_summary(metrics: dict[str, Any], run_dir: str) -> None:
    """Validation Dice per class of the best checkpoint, and where the run lives."""
    table = Table(title="medseg train — best checkpoint", show_header=True)
    table.add_column("class")
    table.add_column("val Dice", justify="right")
    for name, value in metrics["val_dice_per_class"].items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("[bold]mean foreground[/]", f"[bold]{metrics['val_dice']:.4f}[/]")
    console = Console()
    console.print(table)
    m = metrics
    console.print(
        f"best epoch {m['best_epoch']} of {m['epochs']} · {m['n_train']} train / {m['n_val']} val cases · "
        f"{m['train_seconds']:.0f} s\nrun dir: {run_dir}  (config.yaml, checkpoints/, logs/, metrics.json)"
    )
