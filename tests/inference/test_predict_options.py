"""``medseg predict`` options: --tta, --lcc, --save-probabilities, CV fold ensembles and --folds, skip/--overwrite,
exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from predict_helpers import make_affine, render_phantom, save_with_codes
from scipy import ndimage

from medseg.cli import main
from medseg.cli.predict import run as run_predict


@pytest.fixture
def one_case(tmp_path: Path) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    affine, shape = make_affine((1.8, 2.2, 1.9), "LPS", 11.0, (1, 0, 1))
    save_with_codes(inp / "case.nii.gz", render_phantom(affine, shape)[0], affine)
    return inp


def _labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def test_tta_lcc_and_probabilities(trained_runs: dict[str, Path], one_case: Path, tmp_path: Path, capsys) -> None:
    run = str(trained_runs["3d"])
    plain, extra = tmp_path / "plain", tmp_path / "extra"
    assert run_predict(["-m", run, "-i", str(one_case), "-o", str(plain)]) == 0
    argv = ["-m", run, "-i", str(one_case), "-o", str(extra), "--tta", "--lcc", "--save-probabilities"]
    assert run_predict(argv) == 0
    capsys.readouterr()
    labels = _labels(extra / "case.nii.gz")
    probs = np.load(extra / "case_probabilities.npz")["probabilities"]
    assert probs.dtype == np.float16 and probs.shape == (3, *labels.shape)
    sums = probs.astype(np.float32).sum(0)
    assert np.all((np.abs(sums - 1) < 5e-3) | (sums == 0))  # a distribution, or 0 outside the cropped body
    for c in (1, 2):
        assert ndimage.label(labels == c)[1] == 1  # --lcc: one component per class
    agreement = np.mean(labels == _labels(plain / "case.nii.gz"))
    assert 0.9 < agreement < 1.0  # TTA changes a few boundary voxels, not the segmentation
    assert not list(extra.glob(".*"))  # no temporary files left


def test_fold_ensemble_and_folds(trained_runs: dict[str, Path], one_case: Path, tmp_path: Path, capsys) -> None:
    cv = tmp_path / "cv"
    for k in (0, 1):
        shutil.copytree(trained_runs["3d"], cv / f"fold_{k}")
    single, both, one = tmp_path / "single", tmp_path / "both", tmp_path / "one"
    assert run_predict(["-m", str(trained_runs["3d"]), "-i", str(one_case), "-o", str(single)]) == 0
    assert run_predict(["-m", str(cv), "-i", str(one_case), "-o", str(both)]) == 0
    assert run_predict(["-m", str(cv), "-i", str(one_case), "-o", str(one), "--folds", "1"]) == 0
    capsys.readouterr()
    ref = _labels(single / "case.nii.gz")
    np.testing.assert_array_equal(_labels(both / "case.nii.gz"), ref)  # the mean of identical folds
    np.testing.assert_array_equal(_labels(one / "case.nii.gz"), ref)
    assert len(json.loads((both / "predict_summary.json").read_text())["models"]) == 2
    assert json.loads((one / "predict_summary.json").read_text())["models"] == [str(cv / "fold_1")]
    assert run_predict(["-m", str(cv), "-i", str(one_case), "-o", str(one), "--folds", "7"]) == 1
    assert "no trained fold" in " ".join(capsys.readouterr().err.split())


def test_existing_outputs_are_skipped_unless_overwrite(trained_runs: dict[str, Path], one_case: Path, tmp_path: Path):
    out = tmp_path / "out"
    argv = ["-m", str(trained_runs["3d"]), "-i", str(one_case), "-o", str(out)]
    assert run_predict(argv) == 0
    target = out / "case.nii.gz"
    target.write_bytes(b"stale")
    assert run_predict(argv) == 0
    assert target.read_bytes() == b"stale"
    assert "exists" in json.loads((out / "predict_summary.json").read_text())["cases"]["case.nii.gz"]
    assert run_predict([*argv, "--overwrite"]) == 0
    assert _labels(target).shape == nib.load(one_case / "case.nii.gz").shape


def test_exit_codes_through_the_medseg_command(trained_runs: dict[str, Path], one_case: Path, tmp_path: Path) -> None:
    main(["predict", "-m", str(trained_runs["2d"]), "-i", str(one_case), "-o", str(tmp_path / "ok")])  # exit 0
    with pytest.raises(SystemExit) as err:
        main(["predict", "-m", str(tmp_path / "missing"), "-i", str(one_case), "-o", str(tmp_path / "x")])
    assert err.value.code == 1
    with pytest.raises(SystemExit) as err:
        main(["predict", "-m", str(trained_runs["2d"])])  # argparse: -i/-o missing
    assert err.value.code == 2


def test_memory_budget_option(trained_runs: dict[str, Path], one_case: Path, tmp_path: Path) -> None:
    """A tiny --memory-budget (float16 probabilities, many slabs) gives the same labels up to near-ties."""
    run = str(trained_runs["3d"])
    assert run_predict(["-m", run, "-i", str(one_case), "-o", str(tmp_path / "a")]) == 0
    assert run_predict(["-m", run, "-i", str(one_case), "-o", str(tmp_path / "b"), "--memory-budget", "1e-4"]) == 0
    a, b = _labels(tmp_path / "a" / "case.nii.gz"), _labels(tmp_path / "b" / "case.nii.gz")
    assert np.mean(a == b) > 0.999
