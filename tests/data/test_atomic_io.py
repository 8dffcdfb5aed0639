"""``medseg.data.io.atomic_path``: every output (JSON, PNG, NIfTI, checkpoints, exports) is written through it."""

from __future__ import annotations

import os
import stat

import pytest

from medseg.fileio import atomic_path, atomic_write_text


def test_atomic_path_replaces_whole_file_with_usual_permissions(tmp_path) -> None:
    target = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(target, ".nii.gz") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".out.nii.gz.")
        assert not target.exists()  # nothing visible under the final name while writing
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.nii.gz"]


def test_atomic_path_keeps_the_old_file_and_no_temporary_on_error(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
