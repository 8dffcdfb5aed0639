"""Training curves from synthetic Lightning CSV logs of a train, CV and Turbolift run dir."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from medseg.viz import plot_training_curves
from medseg.viz.curves import find_logs, read_run_log, read_training_logs

HEADER = "epoch,lr-AdamW,step,train_loss,val_dice,val_dice_1,val_dice_2"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def lightning_csv(epochs: int, steps_per_epoch: int = 2, offset: float = 0.0) -> str:
    """Rows as Lightning's CSVLogger writes them (lr at epoch start, val then train at epoch end), plus the final
    re-validation of the best checkpoint that ``train`` runs after fit (logged at epoch == max_epochs)."""
    rows = [HEADER]
    for e in range(epochs):
        end = (e + 1) * steps_per_epoch - 1
        rows.append(f",{0.01 / (e + 1)},{e * steps_per_epoch},,,,")
        rows.append(f"{e},,{end},,{0.1 * (e + 1) + offset},{0.2 * (e + 1)},0.0")
        rows.append(f"{e},,{end},{2.0 - 0.1 * e},,,")
    rows.append(f"{epochs},,{epochs * steps_per_epoch - 1},,0.99,0.98,0.97")
    return "\n".join(rows) + "\n"


def write_run(run: Path, epochs: int, classes: tuple[str, ...] = ("organ", "lesion"), **kw: float) -> Path:
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.csv").write_text(lightning_csv(epochs, **kw))
    metrics = {"best_epoch": epochs, "val_dice_per_class": {c: 0.5 for c in classes}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_single_run_values(tmp_path):
    run = write_run(tmp_path / "run", epochs=3)
    log = read_run_log(run / "logs" / "metrics.csv")
    assert log.name == "run"
    assert log.epochs == [1, 2, 3]
    assert log.train_loss == pytest.approx([2.0, 1.9, 1.8])
    assert log.val_epochs == [1, 2, 3]  # the re-validation row (epoch 3, 0-based) is not an epoch of training
    assert log.val_dice == pytest.approx([0.1, 0.2, 0.3])
    assert list(log.val_dice_per_class) == ["organ", "lesion"]  # names from metrics.json, in class order
    assert log.val_dice_per_class["organ"] == pytest.approx([0.2, 0.4, 0.6])
    assert log.val_dice_per_class["lesion"] == [0.0, 0.0, 0.0]  # a real 0 stays 0
    xs, lrs = log.lr["AdamW"]
    assert xs == pytest.approx([1.0, 2.0, 3.0]) and lrs == pytest.approx([0.01, 0.005, 0.01 / 3])
    assert log.best_epoch == 3
    assert log.step_loss == ([], [])


def test_resumed_rows_later_wins_and_missing_values(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    text = "epoch,step,train_loss,val_dice,val_dice_1\n0,1,1.5,,\n0,1,,0.4,\n1,3,1.2,,\n1,3,1.1,,\n1,3,,0.6,nan\n"
    (run / "logs" / "metrics.csv").write_text(text)
    log = read_run_log(run / "logs" / "metrics.csv")
    assert log.epochs == [1, 2] and log.train_loss == pytest.approx([1.5, 1.1])
    assert log.val_dice == pytest.approx([0.4, 0.6])
    assert math.isnan(log.val_dice_per_class["class 1"][1])  # no metrics.json: generic names
    assert log.lr == {} and log.best_epoch is None


def test_step_losses_on_a_fractional_epoch_axis(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    rows = ["epoch,step,train_loss_step,train_loss_epoch"]
    for e in range(2):
        rows += [f"{e},{4 * e + s},{1.0 - 0.1 * s},," for s in range(4)]
        rows.append(f"{e},{4 * e + 3},,{0.9 - e * 0.1}")
    (run / "logs" / "metrics.csv").write_text("\n".join(rows) + "\n")
    log = read_run_log(run / "logs" / "metrics.csv")
    assert log.train_loss == pytest.approx([0.9, 0.8])
    xs, ys = log.step_loss
    assert xs == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75])
    assert ys[:4] == pytest.approx([1.0, 0.9, 0.8, 0.7])


def test_plot_single_run_writes_png(tmp_path):
    run = write_run(tmp_path / "run", epochs=4)
    path = plot_training_curves(run)
    assert path == run / "training_curves.png"
    width, height = png_size(path)
    assert width == 3 * 440 and 300 < height < 400  # three panels (loss, Dice, lr) in one row at 100 dpi
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_cv_run_one_line_per_fold(tmp_path):
    cv = tmp_path / "cv"
    for k, epochs in ((0, 3), (1, 4), (2, 2), (10, 5)):
        write_run(cv / f"fold_{k}", epochs=epochs, offset=0.01 * k)
    (cv / "splits.json").write_text("{}")
    groups = read_training_logs(cv)
    assert list(groups) == ["cv"]
    assert [r.name for r in groups["cv"]] == ["fold_0", "fold_1", "fold_2", "fold_10"]
    assert [len(r.epochs) for r in groups["cv"]] == [3, 4, 2, 5]
    assert groups["cv"][1].val_dice[0] == pytest.approx(0.11)
    out = plot_training_curves(cv, tmp_path / "pictures" / "cv.png")
    assert out == tmp_path / "pictures" / "cv.png" and png_size(out)[1] < 400  # one row


def test_turbolift_run_one_row_per_stage(tmp_path):
    tl = tmp_path / "tl"
    write_run(tl / "stage_0_ct", epochs=3)
    for stage in ("stage_1_cbct", "stage_2_cbct_tst", "baseline_scratch"):
        for k in range(3):
            write_run(tl / stage / f"fold_{k}", epochs=2)
    (tl / "stage_1_cbct" / "splits.json").write_text("{}")
    rows = find_logs(tl)
    assert list(rows) == ["stage_0_ct", "stage_1_cbct", "stage_2_cbct_tst", "baseline_scratch"]
    assert [len(v) for v in rows.values()] == [1, 3, 3, 3]
    assert [name for name, _ in rows["stage_2_cbct_tst"]] == ["fold_0", "fold_1", "fold_2"]
    width, height = png_size(plot_training_curves(tl))
    assert width == 3 * 440 and height > 4 * 300


def test_no_logs_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "fold_0").mkdir(parents=True)
    with pytest.raises(ValueError, match="no training logs found") as err:
        plot_training_curves(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    with pytest.raises(ValueError, match="not a directory"):
        plot_training_curves(tmp_path / "missing")


def test_failed_write_leaves_old_picture_and_no_temporary(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", epochs=2)
    (run / "training_curves.png").write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plot_training_curves(run)
    assert (run / "training_curves.png").read_bytes() == b"old"
    assert sorted(p.name for p in run.iterdir()) == ["logs", "metrics.json", "training_curves.png"]
