"""Bad inputs to every command, beyond the dataset corpus: each is refused with its exit code and one line that
names the file (or key) and the problem — never a traceback — and nothing is written or half-written.

Classes (issue 16): silent wrong results (NaN/Inf, complex, RGB, empty images, output name clashes, unfinished
folds, missing checkpoints, label values), resource bombs (headers declaring more than the file holds, resampling
beyond the memory budget), tracebacks (damaged checkpoints and configs, devices, unwritable outputs, symlinks), and
legitimate inputs that used to be refused or mishandled (symlinked datasets, upper-case suffixes, macOS ``._*``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_run, phantom, save, state

from medseg import cli
from medseg.run_dir import FINISHED, RunDir


def medseg(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        cli.main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def written(folder: Path) -> list[str]:
    """Image outputs and temporaries in ``folder`` (nothing is expected after a refusal)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != "predict_summary.json")


# --------------------------------------------------------------------------------------------- bad predict inputs
def _gz_header_bomb(path: Path) -> Path:
    """A ~1 KB .nii.gz whose header declares 4 GiB of float32 voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 256))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 64))
    return path


def _mha_header_bomb(path: Path) -> Path:
    text = "ObjectType = Image\nNDims = 3\nDimSize = 2048 2048 256\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    path.write_bytes(text.encode() + b"\0" * 64)
    return path


def _truncated(path: Path) -> Path:
    save(path, phantom())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _rgb(path: Path) -> Path:
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return save(path, rgb)


def _nan(path: Path) -> Path:
    data = phantom()
    data[3, 4, 5] = np.nan
    data[1, 1, 1] = np.inf
    return save(path, data)


def _far_spacing(path: Path) -> Path:
    """16³ voxels of 1 m each: resampled to the run's 2 mm it would be 5·10¹¹ voxels."""
    return save(path, phantom((16, 16, 16)), np.diag([1000.0, 1000.0, 1000.0, 1.0]))


def _text(path: Path) -> Path:
    path.write_text("not an image\n")
    return path


def _zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


BAD_IMAGES: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    # name: (file name, writer, what the one line must say)
    "nan_voxels": ("nan.nii.gz", _nan, "2 NaN/Inf voxels"),
    "complex_voxels": ("cplx.nii.gz", lambda p: save(p, phantom().astype(np.complex64)), "complex-valued voxels"),
    "rgb_voxels": ("rgb.nii.gz", _rgb, "unsupported voxel type"),
    "empty_image": ("zeros.nii.gz", lambda p: save(p, np.zeros((16, 16, 16), np.float32)), "every voxel is 0"),
    "gz_header_bomb": ("bomb.nii.gz", _gz_header_bomb, "more than a"),
    "mha_header_bomb": ("bomb.mha", _mha_header_bomb, "more than a"),
    "resample_bomb": ("far.nii.gz", _far_spacing, "more than the memory budget"),
    "truncated_gz": ("cut.nii.gz", _truncated, "cut.nii.gz"),
    "zero_byte_file": ("empty.nii.gz", _zero_bytes, "empty.nii.gz"),
    "four_d_channels": (
        "three.nii.gz",
        lambda p: save(p, np.stack([phantom(seed=s) for s in range(3)], axis=-1)),
        "3 image channel(s) (a 4D image: channels in its 4th dimension), but the model was trained on 1",
    ),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_predict_refuses_a_bad_image_by_name_and_writes_nothing(name, untrained_run, tmp_path, capsys):
    file_name, writer, message = BAD_IMAGES[name]
    (tmp_path / "in").mkdir()
    image = writer(tmp_path / "in" / file_name)
    out = tmp_path / "out"
    code, stdout, err = medseg(["predict", "-m", untrained_run, "-i", image, "-o", out], capsys)
    assert code == 1
    assert "Traceback" not in err + stdout
    summary = json.loads((out / "predict_summary.json").read_text())["cases"]
    assert list(summary) == [file_name] and summary[file_name].startswith("FAILED"), summary
    assert message in summary[file_name] and str(image) in summary[file_name], summary
    assert written(out) == []  # no label map, no temporary file


def test_nonfinite_voxels_are_predicted_with_an_explicit_opt_in(untrained_run, tmp_path, capsys):
    image = _nan(tmp_path / "in" / "nan.nii.gz")
    code, _, err = medseg(
        ["predict", "-m", untrained_run, "-i", image, "-o", tmp_path / "out", "--replace-nonfinite", "0"], capsys
    )
    assert code == 0, err
    assert nib.load(tmp_path / "out" / "nan.nii.gz").shape == (20, 20, 20)


def _predict_refusal(args: list[str], untrained_run: Path, capsys) -> str:
    code, _, err = medseg(["predict", "-m", untrained_run, *args], capsys)
    assert code == 1, err
    return one_line(err)


def test_a_non_image_input_file_is_refused(untrained_run, tmp_path, capsys):
    line = _predict_refusal(["-i", _text(tmp_path / "notes.txt"), "-o", tmp_path / "o"], untrained_run, capsys)
    assert "notes.txt: not a medical image file" in line


def test_output_name_clashes_are_refused_before_predicting(untrained_run, tmp_path, capsys):
    inp = tmp_path / "in"
    save(inp / "case.nii", phantom())
    save(inp / "case.nii.gz", phantom(seed=1))
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(phantom(seed=2)), str(inp / "case.nrrd"))
    line = _predict_refusal(["-i", inp, "-o", tmp_path / "out", "--format", "nii.gz"], untrained_run, capsys)
    assert "would write the same output" in line and "case.nii" in line and "case.nrrd" in line
    assert written(tmp_path / "out") == []


def test_without_format_same_named_inputs_are_kept_apart_by_file_name(untrained_run, tmp_path, capsys):
    inp = tmp_path / "in"
    save(inp / "case.nii", phantom())
    save(inp / "case.nii.gz", phantom(seed=1))
    code, _, err = medseg(["predict", "-m", untrained_run, "-i", inp, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert written(tmp_path / "out") == ["case.nii", "case.nii.gz"]
    summary = json.loads((tmp_path / "out" / "predict_summary.json").read_text())["cases"]
    assert sorted(summary) == ["case.nii", "case.nii.gz"]


@pytest.mark.parametrize("fmt", ["../escape.nii.gz", "txt", "nii.gz/../../x"])
def test_format_must_be_an_image_suffix(fmt, untrained_run, tmp_path, capsys):
    save(tmp_path / "in" / "a.nii.gz", phantom())
    line = _predict_refusal(["-i", tmp_path / "in", "-o", tmp_path / "o", "--format", fmt], untrained_run, capsys)
    assert f"--format {fmt}: not an output image format" in line
    assert not list(tmp_path.rglob("escape*")) and not (tmp_path / "o").exists()


@pytest.mark.parametrize("device", ["foo", "cuda:7" if torch.cuda.is_available() else "cuda"])
def test_unusable_devices_are_one_line(device, untrained_run, tmp_path, capsys):
    save(tmp_path / "in" / "a.nii.gz", phantom())
    line = _predict_refusal(["-i", tmp_path / "in", "-o", tmp_path / "o", "--device", device], untrained_run, capsys)
    assert f"--device {device}" in line


def test_unwritable_output_is_found_before_inference(untrained_run, tmp_path, capsys):
    save(tmp_path / "in" / "a.nii.gz", phantom())
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = _predict_refusal(["-i", tmp_path / "in", "-o", blocker / "out"], untrained_run, capsys)
    assert "not writable" in line and str(blocker) in line


def test_single_file_output_name_and_merged_summary(untrained_run, tmp_path, capsys):
    """``-o seg.nii.gz`` writes that file for one input; a second call into the folder keeps the first row."""
    save(tmp_path / "in" / "a.nii.gz", phantom())
    save(tmp_path / "in" / "b.nii.gz", phantom(seed=1))
    out = tmp_path / "out"
    code, _, err = medseg(
        ["predict", "-m", untrained_run, "-i", tmp_path / "in" / "a.nii.gz", "-o", out / "seg.nii.gz"], capsys
    )
    assert code == 0, err
    assert (out / "seg.nii.gz").is_file() and not (out / "seg.nii.gz").is_dir()
    assert nib.load(out / "seg.nii.gz").shape == (20, 20, 20)
    code, _, err = medseg(["predict", "-m", untrained_run, "-i", tmp_path / "in" / "b.nii.gz", "-o", out], capsys)
    assert code == 0, err
    summary = json.loads((out / "predict_summary.json").read_text())["cases"]
    assert sorted(summary) == ["a.nii.gz", "b.nii.gz"]


def test_hidden_and_upper_case_files(untrained_run, tmp_path, capsys):
    """macOS ``._*`` metadata files are ignored; ``.NII.GZ`` is an image like ``.nii.gz``."""
    inp = tmp_path / "in"
    save(inp / "SCAN.NII.GZ", phantom())
    (inp / "._SCAN.NII.GZ").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    code, _, err = medseg(["predict", "-m", untrained_run, "-i", inp, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert written(tmp_path / "out") == ["SCAN.NII.GZ"]


def test_broken_links_and_loops_in_the_input_folder_are_reported(untrained_run, tmp_path, capsys):
    inp = tmp_path / "in"
    save(inp / "good.nii.gz", phantom())
    (inp / "gone.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (inp / "loop.nii.gz").symlink_to(inp / "loop.nii.gz")
    code, _, err = medseg(["predict", "-m", untrained_run, "-i", inp, "-o", tmp_path / "out"], capsys)
    assert code == 1 and "Traceback" not in err
    summary = json.loads((tmp_path / "out" / "predict_summary.json").read_text())["cases"]
    assert summary["good.nii.gz"].startswith("ok")
    assert "broken symbolic link" in summary["gone.nii.gz"] and "broken symbolic link" in summary["loop.nii.gz"]


def test_a_claimed_output_is_left_to_its_writer_and_a_stale_claim_is_taken_over(untrained_run, tmp_path, capsys):
    save(tmp_path / "in" / "a.nii.gz", phantom())
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".a.nii.gz.lock"
    lock.write_text(f"{os.getppid()} {socket.gethostname()}")  # a live process (pytest's parent) holds it
    code, _, _ = medseg(["predict", "-m", untrained_run, "-i", tmp_path / "in", "-o", out], capsys)
    assert code == 1 and not (out / "a.nii.gz").exists()
    assert (
        "being written by another medseg predict"
        in json.loads((out / "predict_summary.json").read_text())["cases"]["a.nii.gz"]
    )
    lock.write_text(f"999999999 {socket.gethostname()}")  # a dead process: taken over
    code, _, err = medseg(["predict", "-m", untrained_run, "-i", tmp_path / "in", "-o", out], capsys)
    assert code == 0, err
    assert (out / "a.nii.gz").is_file() and not lock.exists()


# ------------------------------------------------------------------------------------------- bad run directories
def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _cv_with_killed_fold(run: Path, tmp: Path) -> Path:
    cv = tmp / "cv"
    _copy(run, cv / "fold_0")
    _copy(run, cv / "fold_1")
    (cv / "fold_1" / "metrics.json").unlink()
    state(cv / "fold_1", state="running", host=socket.gethostname(), pid=999999999, started="2026-01-01T00:00:00")
    return cv


RUN_DIR_DAMAGE: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "killed fold in a CV ensemble": (_cv_with_killed_fold, "fold_1 is interrupted"),
    "missing best.ckpt": (
        lambda run, tmp: _drop(_copy(run, tmp / "r"), "checkpoints/best.ckpt"),
        "best.ckpt: missing; the run is finished (--checkpoint last uses last.ckpt)",
    ),
    "zero-byte best.ckpt": (lambda run, tmp: _write(_copy(run, tmp / "r"), "checkpoints/best.ckpt", b""), "empty file"),
    "truncated best.ckpt": (
        lambda run, tmp: _cut(_copy(run, tmp / "r"), "checkpoints/best.ckpt"),
        "best.ckpt: not a readable checkpoint",
    ),
    "checkpoint without state_dict": (
        lambda run, tmp: _torch(_copy(run, tmp / "r"), {"epoch": 3}),
        "best.ckpt: not a medseg checkpoint (no state_dict of tensors)",
    ),
    "checkpoint of another network": (
        lambda run, tmp: _torch(_copy(run, tmp / "r"), {"state_dict": {"net.x.weight": torch.zeros(2, 2)}}),
        "best.ckpt: does not fit the network of config.yaml",
    ),
    "pickled code in the checkpoint": (
        lambda run, tmp: _torch(_copy(run, tmp / "r"), {"state_dict": {}, "evil": _Evil()}),
        "best.ckpt: not a readable checkpoint",
    ),
    "malformed config.yaml": (
        lambda run, tmp: _write(_copy(run, tmp / "r"), "config.yaml", b"model: {net: [\n"),
        "config.yaml: not valid YAML",
    ),
    "unknown class in config.yaml": (
        lambda run, tmp: _edit(_copy(run, tmp / "r"), "config.yaml", "medseg.nets.UNet", "medseg.nets.Unknown"),
        "model.net._target_='medseg.nets.Unknown' is not an allowed constructor",
    ),
    "missing preprocessing.json": (
        lambda run, tmp: _drop(_copy(run, tmp / "r"), "preprocessing.json"),
        "preprocessing.json: missing",
    ),
    "damaged preprocessing.json": (
        lambda run, tmp: _write(_copy(run, tmp / "r"), "preprocessing.json", b'{"spacing": '),
        "preprocessing.json: unreadable",
    ),
    "not a folder": (lambda run, tmp: tmp / "nothing_here", "nothing_here: not a folder"),
    "an empty folder": (lambda run, tmp: _mkdir(tmp / "empty"), "neither a train run"),
    "a run that failed": (
        lambda run, tmp: _state(_copy(run, tmp / "r"), state="failed", error="FloatingPointError: loss NaN"),
        "the run is failed (FloatingPointError: loss NaN)",
    ),
}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo hacked",))


def _drop(run: Path, rel: str) -> Path:
    (run / rel).unlink()
    return run


def _write(run: Path, rel: str, data: bytes) -> Path:
    (run / rel).write_bytes(data)
    return run


def _cut(run: Path, rel: str) -> Path:
    data = (run / rel).read_bytes()
    return _write(run, rel, data[: len(data) // 3])


def _torch(run: Path, obj: dict) -> Path:
    torch.save(obj, run / "checkpoints" / "best.ckpt")
    return run


def _edit(run: Path, rel: str, old: str, new: str) -> Path:
    text = (run / rel).read_text()
    assert old in text
    (run / rel).write_text(text.replace(old, new))
    return run


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _state(run: Path, **record: object) -> Path:
    state(run, **record)
    return run


@pytest.mark.parametrize("name", list(RUN_DIR_DAMAGE))
@pytest.mark.parametrize("command", ["predict", "export"])
def test_damaged_run_directories_are_one_line(name, command, untrained_run, tmp_path, capsys):
    damage, message = RUN_DIR_DAMAGE[name]
    model = damage(untrained_run, tmp_path)
    if command == "export" and name == "killed fold in a CV ensemble":
        model, message = model / "fold_1", "the run is interrupted"  # export takes one run: the killed fold
    save(tmp_path / "in" / "a.nii.gz", phantom())
    out = tmp_path / "out"
    if command == "predict":
        args = ["predict", "-m", model, "-i", tmp_path / "in", "-o", out]
    else:
        args = ["export", "-m", model, "--format", "torchscript", "-o", out / "model.pt"]
    code, _, err = medseg(args, capsys)
    assert code == 1, err
    line = one_line(err)
    assert message in line, line
    assert written(out) == []


def test_label_values_of_the_files_come_back_in_predictions(tmp_path, capsys):
    """A run trained on 0/255 masks (declared in dataset.json) writes 0/255, not class indices."""
    run = make_run(tmp_path / "run", label_values=[0, 255])
    save(tmp_path / "in" / "a.nii.gz", phantom())
    code, _, err = medseg(["predict", "-m", run, "-i", tmp_path / "in", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    values = set(np.unique(np.asanyarray(nib.load(tmp_path / "out" / "a.nii.gz").dataobj)).tolist())
    assert values <= {0, 255}, values  # class index 1 is written as the value 255 the label files used


def test_multichannel_model_reports_incomplete_cases(tmp_path, capsys):
    run = make_run(tmp_path / "run", in_channels=2)
    inp = tmp_path / "in"
    save(inp / "a_0000.nii.gz", phantom())
    save(inp / "a_0001.nii.gz", phantom(seed=1))
    save(inp / "b_0000.nii.gz", phantom(seed=2))
    code, _, err = medseg(["predict", "-m", run, "-i", inp, "-o", tmp_path / "out"], capsys)
    assert code == 1 and "Traceback" not in err
    summary = json.loads((tmp_path / "out" / "predict_summary.json").read_text())["cases"]
    assert summary["a_0000.nii.gz"].startswith("ok")
    assert "case b has channels 0000, the model needs 0000..0001" in summary["b_0000.nii.gz"]


# ----------------------------------------------------------------------------------------------- other commands
def test_commands_on_missing_folders_are_one_line(tmp_path, capsys):
    cases = [
        (["cv", "aggregate", tmp_path / "none"], "no finished fold"),
        (["compare", tmp_path / "a", tmp_path / "b"], "no such run folder"),
        (["plot", tmp_path / "none"], "not a directory"),
        (["evaluate", "-p", tmp_path / "p", "-l", tmp_path / "l"], "no such folder"),
        (["export", "-m", tmp_path / "none", "--format", "onnx"], "none: not a folder"),
    ]
    for args, message in cases:
        code, _, err = medseg(args, capsys)
        assert code == 1, (args, err)
        assert message in one_line(err), (args, err)


def test_evaluate_with_mismatched_geometry_names_both_files(tmp_path, capsys):
    save(tmp_path / "p" / "c.nii.gz", np.zeros((8, 8, 8), np.uint8))
    save(tmp_path / "l" / "c.nii.gz", np.zeros((8, 8, 9), np.uint8))
    code, _, err = medseg(["evaluate", "-p", tmp_path / "p", "-l", tmp_path / "l"], capsys)
    assert code == 1
    text = " ".join(err.split())
    assert "geometry mismatch" in text and str(tmp_path / "p" / "c.nii.gz") in text and "Traceback" not in text
    assert not (tmp_path / "p" / "evaluation.json").exists()


def test_evaluate_lists_every_prediction_it_cannot_score(tmp_path, capsys):
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:5, 2:5, 2:5] = 1
    nan = label.astype(np.float32)
    nan[0, 0, 0] = np.nan
    bad = {
        "four_d.nii.gz": (np.stack([label, label], -1), "a label map must be 3D, got shape (8, 8, 8, 2)"),
        "probs.nii.gz": (label * np.float32(0.6), "label maps must hold integer values"),
        "nan.nii.gz": (nan, "1 NaN/Inf voxels in a label map"),
    }
    for name, (pred, _) in bad.items():
        save(tmp_path / "p" / name, pred)
        save(tmp_path / "l" / name, label)
    save(tmp_path / "p" / "good.nii.gz", label)
    save(tmp_path / "l" / "good.nii.gz", label)
    code, _, err = medseg(["evaluate", "-p", tmp_path / "p", "-l", tmp_path / "l"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "3 of 4 case(s) cannot be scored" in err
    for name, (_, message) in bad.items():
        assert f"{tmp_path / 'p' / name}: {message}" in err
    assert not (tmp_path / "p" / "evaluation.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trainer.max_epoch=3"], "trainer.max_epoch: no such config key; did you mean trainer.max_epochs?"),
        (["+trainer.max_epoch=3"], "lightning.pytorch.Trainer takes no argument 'max_epoch'; did you mean"),
        (["+data.patchsize=[8,8,8]"], "SegDataModule takes no argument 'patchsize'; did you mean data.patch_size?"),
        (["model.optimizer.lrate=1"], "did you mean model.optimizer.lr?"),
    ],
)
def test_config_key_typos_stop_before_anything_is_created(args, message, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = medseg(["train", *args, f"hydra.run.dir={run}"], capsys)
    assert code == 2
    assert message in one_line(err)
    assert not run.exists()


def test_unknown_command_suggests_the_nearest(capsys):
    code, _, err = medseg(["predcit"], capsys)
    assert code == 2 and "unknown command 'predcit' (did you mean 'predict'?)" in err


def test_help_version_and_cv_aggregate_help(capsys):
    for command in ("train", "cv", "turbolift"):
        code, out, _ = medseg([command, "--help"], capsys)
        assert (
            code == 0
            and out.startswith(f"usage: medseg {command}")
            and "examples" in out.replace("example:", "examples")
        )
        assert "Hydra" in out and len(out.splitlines()) < 45  # ours, not Hydra's 170-line dump
    code, out, _ = medseg(["cv", "aggregate", "--help"], capsys)
    assert out.startswith("usage: medseg cv aggregate")
    code, out, _ = medseg(["--version"], capsys)
    assert out.startswith("medseg ") and out.strip().split()[1][0].isdigit()
    code, out, _ = medseg(["--help"], capsys)
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    assert len({line.index("medseg ", 3) for line in rows}) == 1  # the usage column is aligned


def test_finished_run_dir_rerun_with_another_dataset_is_refused(tiny_dataset, tmp_path, msd_dataset_factory):
    """Re-running a finished run with another dataset would overwrite its metrics and config: refused, unchanged."""
    from medseg.config import compose_config
    from medseg.validate import ConfigError
    from medseg.workflows.train import train

    common = ["data=nifti", "model/net=unet", "model.net.channels=[4,8]", "data.patch_size=[16,16,16]",
              "data.spacing=[3,3,3]", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=1",
              "data.num_workers=0", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]  # fmt: skip
    run = tmp_path / "run"
    train(compose_config("train", [*common, f"data.root={tiny_dataset}"], run_dir=run))
    before = {p: (run / p).read_bytes() for p in ("metrics.json", "config.yaml", "splits.json")}
    other = msd_dataset_factory(tmp_path / "other", n_cases=5, seed=3)
    with pytest.raises(ConfigError, match=r"different network, dataset or preprocessing \(data\.root: "):
        train(compose_config("train", [*common, f"data.root={other}"], run_dir=run))
    assert {p: (run / p).read_bytes() for p in before} == before
    with pytest.raises(ConfigError, match="resume=false but hydra.run.dir="):
        train(compose_config("train", [*common, f"data.root={tiny_dataset}", "resume=false"], run_dir=run))
    assert RunDir(run).state == FINISHED


def test_stale_splits_are_redrawn_when_unused_and_refused_when_used(tmp_path):
    from medseg.data.discovery import DatasetError
    from medseg.data.splits import load_or_create_cv_splits

    ids = [f"c{i}" for i in range(9)]
    path = tmp_path / "splits.json"
    first = load_or_create_cv_splits(path, ids, 3, 1, 0.25)
    assert len(first["folds"]) == 3
    again = load_or_create_cv_splits(path, ids, 4, 1, 0.25)  # nothing trained on it: redrawn and saved
    assert len(again["folds"]) == 4 and json.loads(path.read_text())["n_folds"] == 4
    with pytest.raises(DatasetError, match=r"drawn with n_folds=4 \(asked: 2\) and runs were trained on it"):
        load_or_create_cv_splits(path, ids, 2, 1, 0.25, in_use=True)
    assert json.loads(path.read_text())["n_folds"] == 4
    user = {"folds": again["folds"]}  # a user-edited file (no settings recorded) wins
    path.write_text(json.dumps(user))
    assert load_or_create_cv_splits(path, ids, 2, 7, 0.5)["folds"] == again["folds"]


def test_a_failed_command_writes_no_split(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = [
        "train",
        "data=nifti",
        f"data.root={tiny_dataset}",
        "data.spacing=[0.001,0.001,0.001]",
        f"hydra.run.dir={run}",
    ]
    code, _, err = medseg(args, capsys)
    assert code == 1
    assert "data.spacing=[0.001, 0.001, 0.001] resamples case" in one_line(err) and "memory budget" in err
    assert not (run / "splits.json").exists() and not (run / "config.yaml").exists()


# ------------------------------------------------------------------------------------------------ bad datasets
def _msd(root: Path, cases: dict[str, tuple[list[np.ndarray], np.ndarray]], labels: dict | None = None) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for cid, (images, label) in cases.items():
        names = [f"./imagesTr/{cid}_{c}.nii.gz" for c in range(len(images))]
        for name, image in zip(names, images, strict=True):
            save(root / name, image)
        save(root / "labelsTr" / f"{cid}.nii.gz", label)
        training.append({"image": names if len(names) > 1 else names[0], "label": f"./labelsTr/{cid}.nii.gz"})
    meta = {"modality": {"0": "MRI"}, "training": training}
    if labels is not None:
        meta["labels"] = labels
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _mask(value: int = 1, seed: int = 0) -> np.ndarray:
    return ((phantom(seed=seed) > 50) * value).astype(np.uint8)


def _check_data(root: Path, capsys) -> tuple[int, dict]:
    code, out, err = medseg(["check-data", f"data.root={root}", "--json"], capsys)
    assert "Traceback" not in err
    return code, json.loads(out)


def test_255_masks_without_declared_labels_are_refused_with_the_values_and_the_fix(tmp_path, capsys):
    root = _msd(tmp_path / "d", {f"c{i}": ([phantom(seed=i)], _mask(255, i)) for i in range(3)})
    code, report = _check_data(root, capsys)
    assert code == 1
    messages = [p["message"] for p in report["problems"]]
    assert any("label values {0, 255} found in the label files are not 0..1: declare them" in m for m in messages)


def test_255_masks_declared_in_dataset_json_are_accepted_and_remapped(tmp_path, capsys):
    from medseg.data.datamodule import SegDataModule

    root = _msd(tmp_path / "d", {f"c{i}": ([phantom(seed=i)], _mask(255, i)) for i in range(4)},
                labels={"0": "background", "255": "organ"})  # fmt: skip
    code, _ = _check_data(root, capsys)
    assert code == 0
    dm = SegDataModule(str(root), spacing=[2.0, 2.0, 2.0], patch_size=[16, 16, 16], num_workers=0, cache="none")
    info = dm.prepare_dataset(lambda ids: {"train": ids[:3], "val": ids[3:]})
    assert info["num_classes"] == 2 and info["label_values"] == [0, 255]
    dm.setup("validate")
    label = dm.val_ds[0]["label"]
    assert set(np.unique(np.asarray(label)).tolist()) == {0, 1}  # the network sees classes 0..1


def test_a_label_typo_in_dataset_json_is_named_with_the_values_found(tmp_path, capsys):
    cases = {f"c{i}": ([phantom(seed=i)], (_mask(1, i) + _mask(1, i + 5)).astype(np.uint8)) for i in range(3)}
    root = _msd(tmp_path / "d", cases, labels={"0": "background", "1": "liver", "1000": "tumour"})
    code, report = _check_data(root, capsys)
    assert code == 1
    assert any("label values [2] not declared in dataset.json labels [0, 1, 1000]" in p["message"]
               for p in report["problems"])  # fmt: skip


def test_different_channel_counts_and_empty_images_are_reported(tmp_path, capsys):
    cases = {
        "c0": ([phantom(), phantom(seed=1)], _mask()),
        "c1": ([phantom(seed=2), phantom(seed=3)], _mask(seed=2)),
        "c2": ([phantom(seed=4)], _mask(seed=4)),
        "c3": ([np.zeros((20, 20, 20), np.float32), phantom(seed=5)], _mask(seed=5)),
    }
    code, report = _check_data(_msd(tmp_path / "d", cases), capsys)
    assert code == 1
    by_case = {p["case"]: p["message"] for p in report["problems"]}
    assert "1 image channel(s), most cases have 2" in by_case["c2_0"]
    assert "every voxel is 0 (an empty image)" in by_case["c3_0"]


def test_a_dataset_of_symlinks_is_legitimate_and_an_escaping_path_is_not(tmp_path, capsys):
    real = _msd(tmp_path / "real", {f"c{i}": ([phantom(seed=i)], _mask(1, i)) for i in range(3)})
    linked = tmp_path / "linked"
    (linked / "imagesTr").mkdir(parents=True)
    (linked / "labelsTr").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        for f in (real / sub).iterdir():
            (linked / sub / f.name).symlink_to(f)
    shutil.copy(real / "dataset.json", linked / "dataset.json")
    code, report = _check_data(linked, capsys)
    assert code == 0, report["problems"]
    meta = json.loads((linked / "dataset.json").read_text())
    meta["training"].append({"image": "../../../../etc/passwd", "label": "./labelsTr/c0.nii.gz"})
    (linked / "dataset.json").write_text(json.dumps(meta))
    code, report = _check_data(linked, capsys)
    assert code == 1 and any("escapes the dataset root" in p["message"] for p in report["problems"])


def test_broken_links_and_loops_in_a_dataset_keep_the_report(tmp_path, capsys):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        save(root / "images" / f"c{i}.nii.gz", phantom(seed=i))
        save(root / "labels" / f"c{i}.nii.gz", _mask(1, i))
    (root / "images" / "gone.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (root / "images" / "loop.nii.gz").symlink_to(root / "images" / "loop.nii.gz")
    code, report = _check_data(root, capsys)
    assert code == 1
    broken = {Path(p["path"]).name for p in report["problems"] if "broken symbolic link" in p["message"]}
    assert broken == {"gone.nii.gz", "loop.nii.gz"}
    assert report["ok_cases"] == 3  # the rest of the report is there
    code, out, err = medseg(["check-data", f"data.root={root}"], capsys)  # the table too
    assert code == 1 and "Traceback" not in err and "loop.nii.gz" in out
