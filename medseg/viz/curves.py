"""Training curves of a run, a CV run or a Turbolift run from Lightning's CSV logs (``logs/metrics.csv``)."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from medseg.run_dir import RunDir
from medseg.viz._figure import new_figure, save_png

LOG_FILE = RunDir(".").log_csv.relative_to(RunDir(".").path)  # logs/metrics.csv below a run dir
TRAIN_LOSS_KEYS = ("train_loss", "train_loss_epoch")


@dataclass
class RunLog:
    """What one run logged, on a 1-based epoch axis (epoch ``e`` of the CSV is plotted at ``e + 1``).

    Attributes:
        name: label of the run in legends (``fold_0``, the run dir's name, ...).
        path: the ``metrics.csv`` read.
        epochs: epochs with a training loss.
        train_loss: mean training loss of each of ``epochs``.
        val_epochs: epochs with a validation Dice (the final re-validation of the best checkpoint is left out).
        val_dice: mean foreground Dice of each of ``val_epochs``.
        val_dice_per_class: class name → Dice of each of ``val_epochs`` (NaN where not logged).
        step_loss: ``(x, loss)`` of per-step training losses, x in fractional epochs; empty when not logged.
        lr: learning-rate column → ``(x, lr)``, x in fractional epochs.
        best_epoch: ``best_epoch`` of the run's ``metrics.json`` when it exists.
    """

    name: str
    path: Path
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_epochs: list[int] = field(default_factory=list)
    val_dice: list[float] = field(default_factory=list)
    val_dice_per_class: dict[str, list[float]] = field(default_factory=dict)
    step_loss: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    lr: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    best_epoch: int | None = None


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    value = float(text)
    return None if math.isnan(value) else value


def _class_names(run_dir: Path, columns: list[str]) -> dict[str, str]:
    """``val_dice_<c>`` column → class name (from ``metrics.json``'s ``val_dice_per_class`` order, else ``class c``)."""
    names: list[str] = []
    metrics = RunDir(run_dir).metrics
    if metrics.is_file():
        try:
            names = list(json.loads(metrics.read_text()).get("val_dice_per_class") or {})
        except (OSError, ValueError):
            names = []
    out = {}
    for col in columns:
        match = re.fullmatch(r"val_dice_(\d+)", col)
        if match:
            c = int(match.group(1))
            out[col] = names[c - 1] if 0 < c <= len(names) else f"class {c}"
    return out


def read_run_log(csv_path: str | Path, name: str | None = None) -> RunLog:
    """Parse one Lightning ``metrics.csv`` (rows of a resumed run that repeat an epoch: the later row wins).

    Args:
        csv_path: the CSV file.
        name: label of the run; default: the run dir's name.

    Returns:
        The parsed curves.
    """
    csv_path = Path(csv_path)
    run_dir = csv_path.parent.parent
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    train, val, steps = _collect(rows, columns)
    log = RunLog(name=name or run_dir.name, path=csv_path, best_epoch=_best_epoch(run_dir))
    log.epochs = [e + 1 for e in sorted(train)]
    log.train_loss = [train[e][0] for e in sorted(train)]
    last = max(train) if train else math.inf  # later validation rows re-validate the best checkpoint after fit
    kept = [e for e in sorted(val) if e <= last]
    log.val_epochs = [e + 1 for e in kept]
    log.val_dice = [float(val[e]["val_dice"]) for e in kept]
    for col, cname in _class_names(run_dir, columns).items():
        dice = [_number(val[e].get(col)) for e in kept]
        log.val_dice_per_class[cname] = [math.nan if v is None else v for v in dice]
    to_x = _step_to_epoch([train[e][1] for e in sorted(train)])
    for col, by_step in steps.items():
        pair = ([to_x(s) for s in sorted(by_step)], [by_step[s] for s in sorted(by_step)])
        if col == "train_loss_step":
            log.step_loss = pair
        else:
            log.lr[col.removeprefix("lr-")] = pair
    return log


def _collect(
    rows: list[dict[str, str]], columns: list[str]
) -> tuple[dict[int, tuple[float, int | None]], dict[int, dict[str, str]], dict[str, dict[int, float]]]:
    """Epoch → (train loss, step), epoch → validation row, per-step column → step → value (later rows win)."""
    train: dict[int, tuple[float, int | None]] = {}
    val: dict[int, dict[str, str]] = {}
    steps: dict[str, dict[int, float]] = {}
    for row in rows:
        epoch, step = _number(row.get("epoch")), _number(row.get("step"))
        loss = next((v for k in TRAIN_LOSS_KEYS if (v := _number(row.get(k))) is not None), None)
        if epoch is not None and loss is not None:
            train[int(epoch)] = (loss, None if step is None else int(step))
        if epoch is not None and _number(row.get("val_dice")) is not None:
            val[int(epoch)] = row
        for col in columns:
            value = _number(row.get(col)) if col == "train_loss_step" or col.startswith("lr-") else None
            if value is not None and step is not None:
                steps.setdefault(col, {})[int(step)] = value
    return train, val, steps


def _step_to_epoch(end_steps: list[int | None]) -> Any:
    """Global step → fractional 1-based epoch, from the step at which each epoch's loss was logged (its last)."""
    ends = sorted({s for s in end_steps if s is not None})
    if not ends:
        return lambda s: float(s + 1)
    starts = np.asarray([0, *(e + 1 for e in ends)], dtype=float)
    return lambda s: 1.0 + float(np.interp(s, starts, np.arange(len(starts)), right=len(starts) - 1))


def _best_epoch(run_dir: Path) -> int | None:
    try:
        value = json.loads(RunDir(run_dir).metrics.read_text()).get("best_epoch")
    except (OSError, ValueError):
        return None
    return int(value) if value is not None else None


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key: stages before baselines, ``fold_10`` after ``fold_2``."""
    parts = tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))
    return (name.startswith("baseline"), parts)


def find_logs(run_dir: str | Path) -> dict[str, list[tuple[str, Path]]]:
    """Locate the CSV logs of a train, CV (``fold_<k>/``) or Turbolift (``stage_<i>_<name>/fold_<k>/``) run dir.

    Args:
        run_dir: the run directory.

    Returns:
        Panel row name → ``(run name, metrics.csv)`` of the runs drawn in that row.

    Raises:
        ValueError: when the folder does not exist or holds no log (the message names the path).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: not a directory")
    if (run_dir / LOG_FILE).is_file():
        return {run_dir.name: [(run_dir.name, run_dir / LOG_FILE)]}
    children = sorted((c for c in run_dir.iterdir() if c.is_dir()), key=lambda c: _natural(c.name))
    direct = [(c.name, c / LOG_FILE) for c in children if (c / LOG_FILE).is_file()]
    nested = {}
    for child in children:
        runs = sorted((g for g in child.iterdir() if (g / LOG_FILE).is_file()), key=lambda g: _natural(g.name))
        if runs and not (child / LOG_FILE).is_file():
            nested[child.name] = [(g.name, g / LOG_FILE) for g in runs]
    if not direct and not nested:
        raise ValueError(
            f"{run_dir}: no training logs found (looked for {LOG_FILE}, */{LOG_FILE} and */*/{LOG_FILE}; "
            "runs with logger=csv write them)"
        )
    if not nested:
        return {run_dir.name: direct}  # a CV run (or a multirun sweep): one line per fold
    rows = {name: [(name, path)] for name, path in direct}  # Turbolift: one row per stage / baseline
    rows.update(nested)
    return {name: rows[name] for name in sorted(rows, key=_natural)}


def read_training_logs(run_dir: str | Path) -> dict[str, list[RunLog]]:
    """Parsed curves of every run under ``run_dir``, grouped as :func:`find_logs` groups them."""
    return {row: [read_run_log(path, name) for name, path in runs] for row, runs in find_logs(run_dir).items()}


def plot_training_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw training loss, validation Dice and learning rate per epoch of a train, CV or Turbolift run.

    A train run gives one row of panels (mean Dice and one dashed line per class); a CV run one line per fold;
    a Turbolift run one row per stage (and baseline), one line per fold.

    Args:
        run_dir: the run directory.
        out: the PNG to write; default ``<run_dir>/training_curves.png``.

    Returns:
        The written PNG (replaced atomically).

    Raises:
        ValueError: when no log is found under ``run_dir``.
    """
    groups = read_training_logs(run_dir)
    out = Path(out) if out is not None else RunDir(run_dir).training_curves
    has_lr = any(log.lr for runs in groups.values() for log in runs)
    ncols = 3 if has_lr else 2
    fig = new_figure(4.4 * ncols, 3.2 * len(groups) + 0.4)
    axes = np.asarray(fig.subplots(len(groups), ncols, squeeze=False))
    for row, (name, runs) in enumerate(groups.items()):
        prefix = f"{name}: " if len(groups) > 1 else ""
        _draw_row(axes[row], runs, prefix)
    fig.suptitle(f"training curves: {Path(run_dir).resolve().name}")
    return save_png(fig, out)


def _draw_row(axes: np.ndarray, runs: list[RunLog], prefix: str) -> None:
    colors = [f"C{i % 10}" for i in range(len(runs))]
    loss_ax, dice_ax = axes[0], axes[1]
    single = len(runs) == 1
    for log, color in zip(runs, colors, strict=True):
        label = "mean" if single else log.name
        if log.step_loss[0]:
            loss_ax.plot(*log.step_loss, color=color, alpha=0.25, linewidth=0.8)
        loss_ax.plot(log.epochs, log.train_loss, color=color, marker="." if len(log.epochs) < 30 else None)
        dice_ax.plot(log.val_epochs, log.val_dice, color=color, label=label, marker="." if single else None)
        if single:
            for i, (cname, values) in enumerate(log.val_dice_per_class.items()):
                dice_ax.plot(log.val_epochs, values, color=f"C{(i + 1) % 10}", linestyle="--", label=cname)
            if log.best_epoch is not None:
                dice_ax.axvline(log.best_epoch, color="grey", linestyle=":", label=f"best epoch {log.best_epoch}")
        if len(axes) > 2:
            for group, (xs, ys) in log.lr.items():
                axes[2].plot(xs, ys, color=color, label=group if single and len(log.lr) > 1 else None)
    loss_ax.set(title=f"{prefix}train loss", xlabel="epoch", ylabel="loss")
    dice_ax.set(title=f"{prefix}validation Dice", xlabel="epoch", ylabel="Dice", ylim=(0, 1.02))
    if dice_ax.get_legend_handles_labels()[0]:
        dice_ax.legend(fontsize="small", loc="lower right")
    if len(axes) > 2:
        axes[2].set(title=f"{prefix}learning rate", xlabel="epoch", ylabel="lr")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if axes[2].get_legend_handles_labels()[0]:
            axes[2].legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if not ax.has_data():
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
