import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.data.datamodule import SegDataModule
from medseg.data.discovery import DatasetError, discover
from medseg.data.io import ras_spacing, read_volume
from medseg.data.splits import load_or_create_split, train_val_split, validate_split
from medseg.data.synthetic import save_nifti
from medseg.data.transforms import intensity_stats, train_transforms, val_transforms

IDS = [f"case_{i:02d}" for i in range(10)]
AUG = {"flip": 0.5, "rotate90": 0.5, "intensity": 0.2, "noise": 0.15}


# ----------------------------------------------------------------------------------------------------- splits
def test_split_is_deterministic_disjoint_and_covering():
    a = train_val_split(IDS, 0.2, seed=7)
    b = train_val_split(list(reversed(IDS)), 0.2, seed=7)  # input order does not matter
    assert a == b
    assert len(a["val"]) == 2 and len(a["train"]) == 8
    assert not set(a["train"]) & set(a["val"])
    assert sorted(a["train"] + a["val"]) == IDS
    assert a["train"] == sorted(a["train"]) and a["val"] == sorted(a["val"])


def test_different_seeds_give_different_splits():
    splits = {tuple(train_val_split(IDS, 0.3, seed=s)["val"]) for s in range(10)}
    assert len(splits) >= 5


@pytest.mark.parametrize(("fraction", "n_val"), [(0.0, 1), (0.01, 1), (0.5, 5), (1.0, 9)])
def test_split_keeps_one_train_and_one_val_case(fraction, n_val):
    split = train_val_split(IDS, fraction, seed=0)
    assert len(split["val"]) == n_val and len(split["train"]) == 10 - n_val


def test_split_needs_two_cases():
    with pytest.raises(DatasetError, match="at least 2 cases"):
        train_val_split(["only"], 0.2, 0)


def test_split_file_written_once_and_reused(tmp_path):
    path = tmp_path / "run" / "splits.json"
    first = load_or_create_split(path, IDS, 0.2, seed=1)
    assert json.loads(path.read_text()) == first and first["seed"] == 1 and first["val_fraction"] == 0.2
    assert load_or_create_split(path, IDS, 0.2, seed=1) == first  # same settings: reused
    with pytest.raises(DatasetError, match=r"drawn with seed=1 \(asked: 99\), val_fraction=0.2 \(asked: 0.5\)"):
        load_or_create_split(path, IDS, 0.5, seed=99, in_use=True)  # a model was trained on it: refused
    again = load_or_create_split(path, IDS, 0.5, seed=99)  # nothing trained on it yet: redrawn with the new ones
    assert again != first and again["seed"] == 99 and json.loads(path.read_text()) == again


def test_user_edited_split_wins(tmp_path):
    path = tmp_path / "splits.json"
    edited = {"train": IDS[3:], "val": IDS[:3]}
    path.write_text(json.dumps(edited))
    assert load_or_create_split(path, IDS, 0.2, seed=0) == edited
    assert load_or_create_split(path, IDS + ["case_99"], 0.2, seed=0) == edited  # new cases don't invalidate it


@pytest.mark.parametrize(
    ("split", "match"),
    [
        ({"train": IDS[1:] + ["ghost"], "val": IDS[:1]}, r"unknown cases \['ghost'\]"),
        ({"train": IDS, "val": IDS[:2]}, r"in both 'train' and 'val'"),
        ({"train": IDS, "val": []}, r"'val' must be a non-empty list"),
        ({"val": IDS}, r"'train' must be a non-empty list"),
    ],
)
def test_invalid_user_split_raises(tmp_path, split, match):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(split))
    with pytest.raises(DatasetError, match=match):
        load_or_create_split(path, IDS, 0.2, seed=0)
    with pytest.raises(DatasetError, match=str(path).replace("\\", "\\\\")):
        validate_split(split, IDS, path)


# ----------------------------------------------------------------------------------------------------- io
def _permuted_affine() -> np.ndarray:
    # voxel axis 0 → S (1 mm), axis 1 → −R (2 mm, flipped), axis 2 → A (1.25 mm)
    aff = np.zeros((4, 4))
    aff[2, 0], aff[0, 1], aff[1, 2], aff[3, 3] = 1.0, -2.0, 1.25, 1.0
    aff[:3, 3] = [10.0, -5.0, 3.0]
    return aff


def test_ras_spacing_of_permuted_flipped_affine():
    np.testing.assert_allclose(ras_spacing(_permuted_affine()), [2.0, 1.25, 1.0])
    np.testing.assert_allclose(ras_spacing(np.diag([-0.8, 0.9, -3.0, 1.0])), [0.8, 0.9, 3.0])


def test_ras_spacing_of_oblique_affine():
    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.5, 2.0, 3.0])
    np.testing.assert_allclose(ras_spacing(aff), [1.5, 2.0, 3.0])


def test_read_volume_nifti_and_nrrd_agree(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(7, 6, 5)).astype(np.float32)  # SimpleITK order (z, y, x)
    img = sitk.GetImageFromArray(arr)
    spacing, origin = (1.5, 2.0, 2.5), (3.0, -4.0, 5.0)
    c, s = np.cos(0.2), np.sin(0.2)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, -1.0]])  # oblique and flipped, in LPS
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(img, str(tmp_path / "vol.nii.gz"))
    sitk.WriteImage(img, str(tmp_path / "vol.nrrd"))

    shape_n, aff_n, data_n = read_volume(tmp_path / "vol.nii.gz")
    shape_r, aff_r, data_r = read_volume(tmp_path / "vol.nrrd")
    expected = np.eye(4)
    expected[:3, :3] = direction * np.asarray(spacing)[None, :]
    expected[:3, 3] = origin
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected  # LPS → RAS
    assert shape_n == shape_r == (5, 6, 7)
    np.testing.assert_allclose(aff_n, expected, atol=1e-5)
    np.testing.assert_allclose(aff_r, expected, atol=1e-5)
    np.testing.assert_allclose(aff_n, aff_r, atol=1e-5)
    np.testing.assert_array_equal(data_n, data_r)
    np.testing.assert_array_equal(data_r, arr.transpose(2, 1, 0))  # (x, y, z) voxel order like nibabel

    hdr_shape, hdr_aff, no_data = read_volume(tmp_path / "vol.nrrd", header_only=True)
    assert no_data is None and hdr_shape == (5, 6, 7)
    np.testing.assert_allclose(hdr_aff, aff_r)


def test_read_volume_error_names_file(tmp_path):
    bad = tmp_path / "broken.nrrd"
    bad.write_bytes(b"garbage")
    with pytest.raises(OSError, match="broken.nrrd"):
        read_volume(bad)


# ----------------------------------------------------------------------------------------------------- transforms
def test_intensity_stats_known_values():
    values = np.arange(1001, dtype=np.float32)  # 0..1000 → percentiles 5 and 995, symmetric
    stats = intensity_stats([values[:400], values[400:].reshape(601, 1)])
    assert stats["lo"] == pytest.approx(5.0)
    assert stats["hi"] == pytest.approx(995.0)
    assert stats["mean"] == pytest.approx(500.0)
    clipped = np.clip(np.arange(1001.0), 5, 995)
    assert stats["std"] == pytest.approx(clipped.std(), rel=1e-6)


def test_intensity_stats_clip_outliers():
    stats = intensity_stats([np.r_[np.zeros(999), 1e6]])
    assert stats["hi"] < 1e6 and stats["mean"] < 1e3


def _case(tiny_dataset):
    case = discover(tiny_dataset).cases[0]
    return {"image": case["image"], "label": case["label"]}


@pytest.mark.parametrize("patch", [(16, 16, 16), (12, 20, 16), (32, 32, 32)])
def test_train_pipeline_3d_patch_size(tiny_dataset, patch):
    torch.manual_seed(0)
    t = train_transforms([2.0, 2.0, 2.0], "MRI", None, list(patch), 3, 0.5, AUG)
    t.set_random_state(0)
    samples = t(_case(tiny_dataset))
    assert len(samples) == 3
    for s in samples:
        assert tuple(s["image"].shape) == (1, *patch)  # 32³ is larger than the volume: padded to the patch
        assert tuple(s["label"].shape) == (1, *patch)
        assert set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0, 2.0}
        assert torch.isfinite(s["image"]).all()
    assert any((s["label"] > 0).any() for s in samples)


def test_train_pipeline_2d_patch(tiny_dataset):
    t = train_transforms([2.0, 2.0, 2.0], "MRI", None, [24, 16, 1], 2, 1.0, AUG)
    t.set_random_state(1)
    samples = t(_case(tiny_dataset))
    for s in samples:
        assert tuple(s["image"].shape) == (1, 24, 16)
        assert tuple(s["label"].shape) == (1, 24, 16)
        assert set(torch.unique(s["label"]).tolist()) <= {0.0, 1.0, 2.0}
        assert (s["label"] > 0).any()  # pos_fraction=1: centred on foreground


def test_val_pipeline_keeps_whole_reoriented_volume(tmp_path):
    shape = (20, 12, 16)
    lab = np.zeros(shape, np.uint8)
    lab[5:10, 3:6, 4:8] = 2
    img = (1.0 + np.random.default_rng(0).random(shape)).astype(np.float32)  # non-zero: nothing to crop
    save_nifti(tmp_path / "img.nii.gz", img, _permuted_affine())
    save_nifti(tmp_path / "lab.nii.gz", lab, _permuted_affine())
    item = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}

    out = val_transforms([2.0, 1.25, 1.0], "MRI", None)(item)  # native RAS spacing: pure reorientation
    assert tuple(out["image"].shape) == (1, 12, 16, 20)  # (R, A, S)
    assert tuple(out["label"].shape) == (1, 12, 16, 20)
    idx = torch.nonzero(out["label"][0] == 2)
    assert idx.min(0).values.tolist() == [12 - 6, 4, 5]  # R flipped: voxel j → 11 − j
    assert idx.max(0).values.tolist() == [12 - 4, 7, 9]
    assert int((out["label"] == 2).sum()) == 5 * 3 * 4
    assert abs(float(out["image"].mean())) < 1e-4 and float(out["image"].std()) == pytest.approx(1.0, abs=1e-2)

    coarse = val_transforms([4.0, 2.5, 2.0], "MRI", None)(item)  # half resolution
    assert np.all(np.abs(np.asarray(coarse["image"].shape[1:]) - [6, 8, 10]) <= 1)
    assert coarse["image"].shape == coarse["label"].shape
    assert set(torch.unique(coarse["label"]).tolist()) == {0.0, 2.0}


def test_val_pipeline_on_synthetic_case(tiny_dataset):
    case = _case(tiny_dataset)
    shape, affine, _ = read_volume(case["image"][0], header_only=True)
    out = val_transforms([2.0, 2.0, 2.0], "MRI", None)(case)
    assert out["image"].shape == out["label"].shape
    # the whole field of view resampled to 2 mm in RAS order (voxel-centre extent / 2 + 1), not a patch or a crop
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    expected = np.empty(3)
    for vox_axis, (world_axis, _) in enumerate(nib.orientations.io_orientation(affine)):
        expected[int(world_axis)] = (shape[vox_axis] - 1) * zooms[vox_axis] / 2.0 + 1
    got = np.asarray(out["image"].shape[1:])
    assert np.all(np.abs(got - expected) <= 1.0), (got, expected)
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0, 2.0}


# ----------------------------------------------------------------------------------------------------- datamodule
def _saved_split(dm: SegDataModule, path):
    return lambda ids: load_or_create_split(path, ids, dm.val_fraction, dm.seed)


def test_datamodule_prepare_and_batches(tiny_dataset, tmp_path):
    dm = SegDataModule(
        root=str(tiny_dataset),
        spacing=None,
        patch_size=[16, 16, 16],
        batch_size=2,
        samples_per_volume=2,
        num_workers=0,
        val_fraction=0.34,
        augment=AUG,
    )
    info = dm.prepare_dataset(_saved_split(dm, tmp_path / "splits.json"))
    assert info["layout"] == "msd" and info["cases"] == 6
    assert info["num_classes"] == 3 and info["in_channels"] == 1 and info["modality"] == "MRI"
    infos_spacing = [ras_spacing(read_volume(c["image"][0], header_only=True)[1]) for c in dm.spec.cases]
    np.testing.assert_allclose(info["spacing"], np.median(infos_spacing, axis=0))
    assert len(dm.split["val"]) == 2 and len(dm.split["train"]) == 4
    assert (tmp_path / "splits.json").is_file()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape[1:]) == (1, 16, 16, 16)
    assert batch["image"].shape == batch["label"].shape
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[0] == 1 and val["image"].shape[2:] == val["label"].shape[2:]
    assert val["case"][0] in dm.split["val"]


def test_datamodule_num_classes_too_small_raises(tiny_dataset, tmp_path):
    dm = SegDataModule(root=str(tiny_dataset), spacing=[2.0, 2.0, 2.0], num_classes=2, num_workers=0)
    with pytest.raises(DatasetError, match="num_classes=2"):
        dm.prepare_dataset(_saved_split(dm, tmp_path / "splits.json"))


def test_datamodule_batch_size_is_patches_per_step(tiny_dataset, tmp_path):
    # SegDataModule documents ``batch_size`` as "patches per step" (as in nnU-Net); MONAI's collate flattens the
    # ``samples_per_volume`` patches of each volume into the batch, so a step must still hold batch_size patches.
    dm = SegDataModule(
        root=str(tiny_dataset),
        spacing=[2.0, 2.0, 2.0],
        patch_size=[16, 16, 16],
        batch_size=2,
        samples_per_volume=2,
        num_workers=0,
        cache=False,
    )
    dm.prepare_dataset(_saved_split(dm, tmp_path / "splits.json"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[0] == 2
