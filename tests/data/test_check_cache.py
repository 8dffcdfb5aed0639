"""Dataset check results kept on disk (data.cache=disk): a later run reads no unchanged case, a changed one again."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from medseg.data import checks
from medseg.data.check_cache import cached_check_case
from medseg.data.checks import check_dataset
from medseg.data.datamodule import SegDataModule
from medseg.data.discovery import DatasetError, discover
from medseg.data.splits import train_val_split


def _cached(folder: Path):
    return functools.partial(cached_check_case, cache_dir=folder)


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The ids of the cases check_case really reads."""
    seen: list[str] = []
    real = checks.check_case

    def spy(case, atol=1e-3):
        seen.append(case["id"])
        return real(case, atol)

    monkeypatch.setattr(checks, "check_case", spy)
    return seen


def _same(a: dict[str, checks.CaseInfo], b: dict[str, checks.CaseInfo]) -> None:
    assert a.keys() == b.keys()
    for cid in a:
        assert a[cid].shape == b[cid].shape and a[cid].label_values == b[cid].label_values
        np.testing.assert_array_equal(a[cid].spacing, b[cid].spacing)
        np.testing.assert_array_equal(a[cid].fg_sample, b[cid].fg_sample)


def test_second_check_reads_no_unchanged_case(tiny_dataset, tmp_path, counted):
    spec = discover(tiny_dataset)
    first, problems = check_dataset(spec, check=_cached(tmp_path / "cache"))
    assert len(counted) == 6 and not [p for p in problems if p.severity == "error"]
    counted.clear()
    second, problems2 = check_dataset(spec, check=_cached(tmp_path / "cache"))
    assert counted == []
    _same(first, second)
    assert [str(p) for p in problems2] == [str(p) for p in problems]
    _same(first, check_dataset(spec)[0])  # the same as without a cache


def test_changed_file_is_checked_again(tiny_dataset, tmp_path, counted):
    spec = discover(tiny_dataset)
    check_dataset(spec, check=_cached(tmp_path / "cache"))
    counted.clear()
    orphan = tmp_path / "cache" / "checks" / f"{'0' * 32}.npz"  # an entry named the way the first version did
    orphan.write_bytes(b"old")
    label = Path(spec.cases[2]["label"])
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # e.g. a corrected label
    check_dataset(spec, check=_cached(tmp_path / "cache"))
    assert counted == [spec.cases[2]["id"]]
    assert len(list((tmp_path / "cache" / "checks").glob("*.npz"))) == 6  # the superseded entry was deleted
    assert not orphan.exists()
    counted.clear()
    check_dataset(spec, check=_cached(tmp_path / "cache"))
    assert counted == []


def test_unreadable_entry_is_rebuilt_and_broken_cases_are_not_stored(tiny_dataset, tmp_path, counted):
    spec = discover(tiny_dataset)
    cache = tmp_path / "cache"
    check_dataset(spec, check=_cached(cache))
    entries = sorted((cache / "checks").glob("*.npz"))
    assert len(entries) == 6
    entries[0].write_bytes(b"not an npz")  # damaged (e.g. a full disk)
    counted.clear()
    check_dataset(spec, check=_cached(cache))
    assert len(counted) == 1 and len(list((cache / "checks").glob("*.npz"))) == 6
    # a broken case is read again every time (and still fails), never served from the cache
    Path(spec.cases[0]["label"]).write_bytes(b"garbage")
    for _ in range(2):
        counted.clear()
        _, problems = check_dataset(spec, check=_cached(cache))
        assert spec.cases[0]["id"] in counted and any(p.case == spec.cases[0]["id"] for p in problems)


def test_datamodule_keeps_check_results_with_the_disk_cache(tiny_dataset, tmp_path, counted):
    def dm(cache: str) -> SegDataModule:
        kw = {"spacing": [2.0] * 3, "num_workers": 0, "cache": cache, "cache_dir": str(tmp_path)}
        m = SegDataModule(root=str(tiny_dataset), **kw)
        m.prepare_dataset(lambda ids: train_val_split(ids, 0.34, 0))
        return m

    first = dm("disk")
    counted.clear()
    second = dm("disk")
    assert counted == []
    assert (second.num_classes, second.spacing, second.split) == (first.num_classes, first.spacing, first.split)
    dm("memory")  # other caches check every case, as before
    assert len(counted) == 6
    Path(discover(tiny_dataset).cases[1]["image"][0]).write_bytes(b"")  # an emptied file is caught again
    with pytest.raises(DatasetError, match="case_001|001"):
        dm("disk")
