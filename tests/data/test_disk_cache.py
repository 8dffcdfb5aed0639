"""data.cache=disk: exact equality with the in-memory path, cache keys, corrupt entries, concurrent writers."""

import json
import logging
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data.utils import set_rnd
from monai.transforms import Compose, LoadImaged

from medseg.data.cache import CacheError, DiskCache
from medseg.data.datamodule import SegDataModule, cache_mode
from medseg.data.splits import train_val_split
from medseg.data.synthetic import save_nifti
from medseg.data.transforms import geometry_settings, preprocess, preprocess_geometry

AUG = {"flip": 0.5, "rotate90": 0.5, "intensity": 0.2, "noise": 0.15}


def _dm(root: Path, cache: str, cache_dir: Path, modality: str = "CT", **kw) -> SegDataModule:
    dm = SegDataModule(
        root=str(root),
        spacing=[2.0, 2.0, 2.0],
        patch_size=[16, 16, 16],
        batch_size=2,
        samples_per_volume=2,
        num_workers=0,
        modality=modality,
        cache=cache,
        cache_dir=str(cache_dir),
        augment=AUG,
        **kw,
    )
    dm.prepare_dataset(lambda ids: train_val_split(ids, 0.34, 0))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _item(root: Path, case: str) -> dict:
    name = f"{case}.nii.gz"
    return {"image": str(root / "imagesTr" / name), "label": str(root / "labelsTr" / name), "case": case}


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.mark.parametrize("modality", ["CT", "MRI"])
def test_disk_cache_equals_memory_exactly(tiny_dataset, tmp_path, modality):
    mem = _dm(tiny_dataset, "memory", tmp_path / "c", modality)
    disk = _dm(tiny_dataset, "disk", tmp_path / "c", modality)
    # the cached arrays themselves: what the cached part of the pipeline gives, bit for bit, labels as integers
    cache, n_cached = disk.disk_cache()
    assert n_cached == len(preprocess_geometry([2.0] * 3)) + (modality == "MRI")  # MRI's z-score needs no statistics
    cached_part = Compose(preprocess([2.0] * 3, modality, disk.stats)[:n_cached])
    for item in disk.val_ds.data:
        arrays, affine = cache.read(cache.entry(item), verify=True)
        ref = cached_part(dict(item))
        assert np.array_equal(arrays["image"], ref["image"].numpy())
        assert np.array_equal(arrays["label"], ref["label"].numpy())
        np.testing.assert_array_equal(affine, ref["image"].affine.numpy())
        meta = json.loads((cache.entry(item) / "meta.json").read_text())
        assert meta["arrays"]["image"]["dtype"] == "float32" and meta["arrays"]["label"]["dtype"] == "uint8"
    # validation items (normalised whole volumes) and seeded training samples (pad, crops, augmentation)
    assert len(mem.val_ds) == len(disk.val_ds) == 2
    for i in range(len(mem.val_ds)):
        a, b = mem.val_ds[i], disk.val_ds[i]
        assert set(a) == set(b) and a["case"] == b["case"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    for seed in (0, 123):
        set_rnd(mem.train_ds, seed)
        set_rnd(disk.train_ds, seed)
        for i in range(len(mem.train_ds)):
            for a, b in zip(mem.train_ds[i], disk.train_ds[i], strict=True):
                assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_later_runs_do_no_decoding(tiny_dataset, tmp_path, monkeypatch):
    cache_dir = tmp_path / "c"
    first = _dm(tiny_dataset, "disk", cache_dir)
    folder = first.disk_cache()[0].folder
    assert len(_entries(folder)) == 6 and (folder / "settings.json").is_file()

    def no_decoding(self, data, *args, **kwargs):
        raise AssertionError("NIfTI decoded although every case is cached")

    monkeypatch.setattr(LoadImaged, "__call__", no_decoding)
    second = _dm(tiny_dataset, "disk", cache_dir)  # a later run
    for _ in range(2):  # epochs
        for batch in second.train_dataloader():
            assert batch["image"].shape[1:] == (1, 16, 16, 16)
        for batch in second.val_dataloader():
            assert batch["image"].shape[0] == 1
    # another fold: other train/val split and other CT statistics share the geometry cache
    other = SegDataModule(
        root=str(tiny_dataset), spacing=[2.0, 2.0, 2.0], patch_size=[16] * 3, num_workers=0, cache="disk",
        cache_dir=str(cache_dir), modality="CT",
    )  # fmt: skip
    other.prepare_dataset(lambda ids: train_val_split(ids, 0.5, 7))
    assert other.stats != first.stats
    other.prepare_data()
    other.setup("fit")
    next(iter(other.train_dataloader()))
    assert other.disk_cache()[0].folder == folder


def test_cache_key_changes_with_files_and_settings(tiny_dataset, tmp_path):
    cache = DiskCache(tmp_path / "c", tiny_dataset, geometry_settings([2.0, 2.0, 2.0]))
    item = _item(tiny_dataset, "case_000")
    key = cache.entry(item)
    assert cache.entry(dict(item)) == key  # stable
    assert DiskCache(tmp_path / "c", tiny_dataset, geometry_settings([2.0, 2.0, 2.0])).entry(item) == key
    assert DiskCache(tmp_path / "c", tiny_dataset, geometry_settings([1.5, 2.0, 2.0])).entry(item).parent != key.parent
    assert DiskCache(tmp_path / "c", tmp_path, geometry_settings([2.0, 2.0, 2.0])).folder != key.parent

    label = Path(item["label"])
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes, other mtime
    touched = cache.entry(item)
    assert touched != key and touched.parent == key.parent
    data = np.zeros((20, 20, 20), np.uint8)
    data[5:9, 5:9, 5:9] = 1
    save_nifti(label, data, np.diag([2.0, 2.0, 2.0, 1.0]))  # rewritten: other size
    assert cache.entry(item) not in (key, touched)


def test_case_ids_become_safe_distinct_folder_names(tiny_dataset, tmp_path):
    cache = DiskCache(tmp_path / "c", tiny_dataset, geometry_settings([2.0, 2.0, 2.0]))
    item = _item(tiny_dataset, "case_000")
    names = {cache.entry({**item, "case": c}).name for c in ("a b", "a_b", "../x/y", "a?b")}
    assert len(names) == 4 and all("/" not in n and " " not in n and not n.startswith(".") for n in names)
    assert cache.entry(item).name.startswith("case_000-")


def test_stale_entry_is_rebuilt_and_removed(tiny_dataset, tmp_path):
    dm = _dm(tiny_dataset, "disk", tmp_path / "c", "MRI")
    cache = dm.disk_cache()[0]
    item = next(it for it in dm.train_ds.data)
    old = cache.entry(item)
    image = Path(item["image"][0])  # one file per channel
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = _dm(tiny_dataset, "disk", tmp_path / "c", "MRI")
    assert cache.ensure(again.train_ds.data, again.train_ds.build) == {"reused": len(again.train_ds.data), "built": 0}
    new = cache.entry(item)
    assert new != old and new.is_dir() and not old.exists()
    assert len(_entries(cache.folder)) == 6


def _flip_byte(path: Path, offset_from_end: int = 7) -> None:
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "damage",
    ["truncate_image", "flip_byte_image", "flip_byte_label", "garbage_meta", "missing_label", "empty_dir"],
)
def test_corrupt_entry_is_detected_and_rebuilt(tiny_dataset, tmp_path, damage, caplog):
    dm = _dm(tiny_dataset, "disk", tmp_path / "c", "MRI")
    cache = dm.disk_cache()[0]
    item = dm.val_ds.data[0]
    entry = cache.entry(item)
    good, affine = cache.read(entry, verify=True)
    if damage == "truncate_image":
        raw = (entry / "image.npy").read_bytes()
        (entry / "image.npy").write_bytes(raw[: len(raw) // 2])
    elif damage.startswith("flip_byte"):
        _flip_byte(entry / f"{damage.rsplit('_', 1)[1]}.npy")  # same size: only the CRC32 notices
    elif damage == "garbage_meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "missing_label":
        (entry / "label.npy").unlink()
    else:
        for f in entry.iterdir():
            f.unlink()

    with pytest.raises(CacheError):
        cache.check(entry, deep=True)
    if not damage.startswith("flip_byte"):
        with pytest.raises(CacheError):
            cache.check(entry)  # cheap checks (sizes, headers, meta) catch these on every start

    # the dataset of a new run reads it, notices the damage, rebuilds the entry and returns the right arrays
    fresh = _dm(tiny_dataset, "disk", tmp_path / "c", "MRI")
    with caplog.at_level(logging.WARNING, logger="medseg.data.cache"):
        out = fresh.val_ds[0]
    ref = _dm(tiny_dataset, "memory", tmp_path / "c", "MRI").val_ds[0]
    assert torch.equal(out["image"], ref["image"]) and torch.equal(out["label"], ref["label"])
    again, affine2 = cache.read(entry, verify=True)  # repaired on disk
    assert all(np.array_equal(good[k], again[k]) for k in ("image", "label"))
    np.testing.assert_array_equal(affine, affine2)
    if damage.startswith("flip_byte"):
        assert "rebuilding" in caplog.text  # found by the CRC32 check of the first read in the process


def test_corrupt_entry_rebuilt_by_prepare_data(tiny_dataset, tmp_path):
    dm = _dm(tiny_dataset, "disk", tmp_path / "c", "MRI")
    cache = dm.disk_cache()[0]
    entry = cache.entry(dm.train_ds.data[0])
    raw = (entry / "label.npy").read_bytes()
    (entry / "label.npy").write_bytes(raw[:-10])
    ids = dm.split["train"] + dm.split["val"]
    assert cache.ensure(dm._items(ids), dm.train_ds.build) == {"reused": 5, "built": 1}
    cache.check(entry, deep=True)


def _build_in_process(args: tuple) -> str:
    root, cache_dir, item = args
    torch.set_num_threads(1)
    cache = DiskCache(cache_dir, root, geometry_settings([2.0, 2.0, 2.0]))
    return str(cache.build_entry(item, Compose(preprocess_geometry([2.0, 2.0, 2.0]))))


def test_concurrent_writers_leave_one_valid_entry(tiny_dataset, tmp_path):
    item = _item(tiny_dataset, "case_001")
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(4) as pool:
        entries = pool.map(_build_in_process, [(tiny_dataset, tmp_path / "c", item)] * 8)
    assert len(set(entries)) == 1
    cache = DiskCache(tmp_path / "c", tiny_dataset, geometry_settings([2.0, 2.0, 2.0]))
    cache.check(Path(entries[0]), deep=True)
    assert [p.name for p in cache.folder.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    assert len(_entries(cache.folder)) == 1


def test_cache_mode_values():
    assert cache_mode(True) == "memory" and cache_mode(False) == "none"
    assert cache_mode("true") == "memory" and cache_mode("FALSE") == "none"
    assert [cache_mode(m) for m in ("memory", "disk", "none", "Disk")] == ["memory", "disk", "none", "disk"]
    with pytest.raises(ValueError, match="data.cache must be one of memory, disk, none"):
        cache_mode("ssd")


def test_disk_cache_unwritable_folder_names_the_key(tiny_dataset, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    dm = SegDataModule(root=str(tiny_dataset), spacing=[2.0] * 3, num_workers=0, cache="disk", cache_dir=str(blocker))
    dm.prepare_dataset(lambda ids: train_val_split(ids, 0.34, 0))
    with pytest.raises(OSError, match="data.cache"):
        dm.prepare_data()
