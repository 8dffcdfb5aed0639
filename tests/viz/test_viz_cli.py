"""``medseg plot``, the curves written at the end of ``medseg train``, ``medseg predict --preview`` and the optional
loggers' checks, on one tiny real run (3-level U-Net, 2 epochs of 16³ patches: a few seconds on a 2-core CPU)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import tiny_train_overrides

from medseg import cli
from medseg.cli._workflow import plot_curves
from medseg.cli.predict import run as run_predict
from medseg.data.synthetic import DEMO_LABELS, synth_case, write_msd_dataset
from medseg.training import loggers

EPOCHS = 2


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def write_dataset(root: Path, n_cases: int = 6) -> Path:
    rng = np.random.default_rng(0)
    cases = ((f"case_{i:03d}.nii.gz", *synth_case(rng, fov_mm=40.0, spacing_range=(1.5, 2.5))) for i in range(n_cases))
    return write_msd_dataset(root, {"name": "tiny", "modality": {"0": "MRI"}, "labels": DEMO_LABELS}, cases)


def medseg(*args: str) -> None:
    """``medseg ARGS`` in this process (Hydra rewrites sys.argv; it is restored)."""
    argv = sys.argv[:]
    try:
        cli.main(list(args))
    finally:
        sys.argv = argv


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root, run dir) of one ``medseg train`` run."""
    base = tmp_path_factory.mktemp("viz_cli")
    data = write_dataset(base / "data")
    run = base / "run"
    medseg("train", *tiny_train_overrides(data, EPOCHS), f"hydra.run.dir={run}")
    return data, run


def test_train_writes_curves_and_plot_redraws_them(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    assert png_size(run / "training_curves.png")[0] == 3 * 440  # written by `medseg train`: loss, Dice, lr
    out = tmp_path / "curves.png"
    medseg("plot", str(run), "-o", str(out))
    assert capsys.readouterr().out.strip() == str(out)
    assert png_size(out) == png_size(run / "training_curves.png")
    from medseg.viz.curves import read_training_logs

    (log,) = read_training_logs(run)[run.name]
    assert log.epochs == list(range(1, EPOCHS + 1)) and len(log.val_dice) == EPOCHS
    assert list(log.val_dice_per_class) == ["organ", "lesion"]
    assert log.val_dice[log.best_epoch - 1] == pytest.approx(json.loads((run / "metrics.json").read_text())["val_dice"])


def test_plot_without_logs_is_one_red_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        medseg("plot", str(tmp_path))
    assert err.value.code == 1
    text = " ".join(capsys.readouterr().err.split())
    assert text.startswith("medseg plot: error:") and str(tmp_path) in text and "no training logs found" in text


def test_plot_failure_after_training_only_warns(tmp_path, monkeypatch, capsys):
    import medseg.viz

    def broken(run_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(medseg.viz, "plot_training_curves", broken)
    plot_curves(tmp_path)  # no exception
    assert "warning: training curves not drawn: RuntimeError: no fonts" in " ".join(capsys.readouterr().err.split())


def test_predict_preview_one_png_per_case(tiny_run, tmp_path):
    data, run = tiny_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("case_000.nii.gz", "case_004.nii.gz"):
        shutil.copy(data / "imagesTr" / name, inputs / name)
    labels = tmp_path / "labels"
    labels.mkdir()
    shutil.copy(data / "labelsTr" / "case_000.nii.gz", labels / "case_000.nii.gz")  # case_004 has no label
    out = tmp_path / "out"
    assert run_predict(["-m", str(run), "-i", str(inputs), "-o", str(out), "--preview-labels", str(labels)]) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["case_000_preview.png", "case_004_preview.png"]
    assert png_size(out / "case_000_preview.png")[1] > png_size(out / "case_004_preview.png")[1]  # + label row
    cases = json.loads((out / "predict_summary.json").read_text())["cases"]
    assert cases["case_000.nii.gz"].endswith("preview written")
    assert cases["case_004.nii.gz"].endswith("preview written (no label found)")

    # skip-existing applies to the previews: kept unless missing; --overwrite redoes them
    before = {p: (out / p).stat().st_mtime_ns for p in pngs}
    (out / "case_004_preview.png").unlink()
    assert run_predict(["-m", str(run), "-i", str(inputs), "-o", str(out), "--preview"]) == 0
    assert (out / "case_000_preview.png").stat().st_mtime_ns == before["case_000_preview.png"]
    assert png_size(out / "case_004_preview.png")[0] == 1200
    cases = json.loads((out / "predict_summary.json").read_text())["cases"]
    assert cases["case_000.nii.gz"] == "exists (skipped; --overwrite to redo)"
    assert cases["case_004.nii.gz"] == "exists (skipped; --overwrite to redo); preview written"
    os.utime(out / "case_000_preview.png", ns=(0, 0))
    assert run_predict(["-m", str(run), "-i", str(inputs), "-o", str(out), "--preview", "--overwrite"]) == 0
    assert (out / "case_000_preview.png").stat().st_mtime_ns > 0


def test_predict_without_preview_writes_no_png(tiny_run, tmp_path):
    data, run = tiny_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(data / "imagesTr" / "case_001.nii.gz", inputs)
    assert run_predict(["-m", str(run), "-i", str(inputs), "-o", str(tmp_path / "out")]) == 0
    assert list((tmp_path / "out").glob("*.png")) == []
    assert run_predict(["-m", str(run), "-i", str(inputs), "-o", str(tmp_path / "o2"), "--preview-labels", "nope"]) == 1


@pytest.mark.parametrize(("name", "package"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_missing_logger_package_fails_before_training(tmp_path, monkeypatch, capsys, name, package):
    monkeypatch.setattr(loggers, "module_available", lambda module: False)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        medseg("train", f"logger={name}", f"hydra.run.dir={run}")
    assert err.value.code == 1
    text = " ".join(capsys.readouterr().err.split())
    assert f"logger={name} needs the '{package}' package: pip install 'medseg[{name}]'" in text
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()  # nothing was trained


def test_check_loggers_accepts_available_and_csv(monkeypatch):
    tb = {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"}
    csv = {"_target_": "medseg.training.safe_io.ResumableCSVLogger"}
    monkeypatch.setattr(loggers, "module_available", lambda module: module == "tensorboardX")
    loggers.check_loggers({"csv": csv, "tensorboard": tb, "off": None})  # Lightning falls back to tensorboardX
    monkeypatch.setattr(loggers, "module_available", lambda module: False)
    loggers.check_loggers({"csv": csv})
    with pytest.raises(loggers.LoggerUnavailableError, match="logger=tb needs the 'tensorboard' package"):
        loggers.check_loggers({"tb": tb})


def test_tensorboard_and_mlflow_loggers_write_files(tiny_run, tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    data, _ = tiny_run
    run = tmp_path / "run"
    medseg("train", *tiny_train_overrides(data, 1), "logger=[tensorboard,mlflow]", f"hydra.run.dir={run}")
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    val_dice = list((run / "mlruns").glob("*/*/metrics/val_dice"))
    assert len(val_dice) == 1 and float(val_dice[0].read_text().split()[1]) > 0
    assert (run / "logs" / "metrics.csv").is_file() and (run / "training_curves.png").is_file()  # CSV kept too
