"""Issue 17, items 5 and 6: every ensemble member normalises the input with its own preprocessing.json (shared where
the settings agree, refused where members cannot be combined); a 2D network's mirroring TTA flips in-plane only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import make_affine, render_phantom

from medseg.data.synthetic import save_nifti
from medseg.inference.predictor import Predictor
from medseg.run_dir import RunDirError


def _member(src: Path, dst: Path, **prep: object) -> Path:
    """A copy of a trained run whose preprocessing.json is changed by ``prep``."""
    shutil.copytree(src, dst)
    path = dst / "preprocessing.json"
    info = json.loads(path.read_text())
    info.update(prep)
    path.write_text(json.dumps(info))
    return dst


def _image(tmp_path: Path) -> torch.Tensor:
    affine, shape = make_affine((2.0, 2.0, 2.0), "RAS")
    image, _ = render_phantom(affine, shape, seed=3)
    save_nifti(tmp_path / "x.nii.gz", image * 400.0 - 100.0, affine)  # CT-like values
    return tmp_path / "x.nii.gz"


def test_each_member_normalises_with_its_own_statistics(trained_runs, tmp_path):
    """Two CT folds with different intensity statistics: the ensemble's softmax is the mean of each member's own
    (before the fix, member 2 saw the input normalised with member 1's statistics)."""
    run = trained_runs["3d"]
    a = _member(run, tmp_path / "a", modality="CT", intensity_stats={"lo": -100, "hi": 300, "mean": 50, "std": 80})
    b = _member(run, tmp_path / "b", modality="CT", intensity_stats={"lo": -50, "hi": 250, "mean": 120, "std": 40})
    c = _member(run, tmp_path / "c", modality="CT", intensity_stats={"lo": -100, "hi": 300, "mean": 50, "std": 80})
    path = _image(tmp_path)
    ensemble = Predictor([a, b, c])
    assert len(ensemble.norms) == 2 and ensemble.member_norm[0] == ensemble.member_norm[2]  # a and c share the work
    image = ensemble.pre({"image": [str(path)]})["image"].as_tensor()[None].float()
    alone = {m: Predictor([m]).probabilities(image) for m in (a, b)}
    assert not torch.allclose(alone[a], alone[b], atol=1e-3)  # the statistics matter for this input
    expected = (2 * alone[a] + alone[b]) / 3
    torch.testing.assert_close(ensemble.probabilities(image), expected, atol=1e-5, rtol=1e-5)


def test_members_that_cannot_be_combined_are_refused(trained_runs, tmp_path):
    run = trained_runs["3d"]
    other = _member(run, tmp_path / "coarse", spacing=[3.0, 3.0, 3.0])
    with pytest.raises(RunDirError, match=r"coarse has spacing \[3.0, 3.0, 3.0\].*must share the spacing"):
        Predictor([run, other])
    more = _member(run, tmp_path / "classes", num_classes=4)
    with pytest.raises(RunDirError, match="num_classes 4"):
        Predictor([run, more])


def test_2d_tta_mirrors_in_plane_only(trained_runs, tmp_path):
    """A 2D network sees (H, W) slices: its TTA averages the unflipped pass and the H and W mirrors — three passes,
    not four with the slice axis counted twice."""
    run = trained_runs["2d"]
    tta, plain = Predictor([run], tta=True), Predictor([run])
    assert tta._flips(tta.modules[0]) == [(), (2,), (3,)]
    assert Predictor([trained_runs["3d"]], tta=True)._flips(None) == [(), (2,), (3,), (4,)]
    image = plain.pre({"image": [str(_image(tmp_path))]})["image"].as_tensor()[None].float()  # (1, C, H, W, D)
    p0 = plain.probabilities(image)
    p_h = torch.flip(plain.probabilities(torch.flip(image, (2,))), (1,))
    p_w = torch.flip(plain.probabilities(torch.flip(image, (3,))), (2,))
    torch.testing.assert_close(tta.probabilities(image), (p0 + p_h + p_w) / 3, atol=1e-5, rtol=1e-5)
    labels, _ = tta.predict([str(tmp_path / "x.nii.gz")])
    assert labels.dtype == np.uint8 and labels.max() > 0
