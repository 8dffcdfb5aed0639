"""Results of the per-case dataset checks kept on disk, so a later run (or fold) need not read every case again.

An entry is keyed by what the check depends on: each file's absolute path, size and modification time, the geometry
tolerance and the check's version. A changed or replaced file gets a new key, so it is checked again, and the entry
it supersedes (same files, older size/mtime or other settings) is deleted, so the folder holds one entry per case
(entries of the first naming, without the ``<paths hash>-`` prefix, are deleted then too).
Only cases without errors are stored (a broken case is read again every run until it is fixed). Entries are written
atomically; one that cannot be read is checked again and rewritten.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data import checks
from medseg.data.cache import digest, file_fingerprint
from medseg.fileio import atomic_path

CHECK_VERSION = 1  # bump when check_case's findings change


def _name(case: dict[str, Any], atol: float) -> tuple[str, str] | None:
    """``(prefix, file name)`` of the case's entry: the prefix hashes which files (paths) the case has, the rest
    their size/mtime and the settings; None when a file cannot be stat'ed."""
    files = [*case["image"], *([case["label"]] if case.get("label") is not None else [])]
    try:
        stats = [file_fingerprint(f) for f in files]
    except OSError:
        return None  # the check itself reports the missing/unreadable file
    prefix = digest([case["id"], [s[0] for s in stats]], 12)
    return prefix, f"{prefix}-{digest([CHECK_VERSION, atol, case['id'], stats], 32)}.npz"


def _load(path: Path) -> tuple[checks.CaseInfo, list[checks.Problem]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            info = checks.CaseInfo(
                tuple(int(s) for s in z["shape"]),
                z["spacing"].astype(np.float64),
                {int(v) for v in z["label_values"]},
                z["fg_sample"].astype(np.float32),
            )
            problems = [checks.Problem(**p) for p in json.loads(str(z["problems"]))]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    return info, problems


def _save(path: Path, info: checks.CaseInfo, problems: list[checks.Problem]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(
            tmp,
            shape=np.asarray(info.shape, np.int64),
            spacing=np.asarray(info.spacing, np.float64),
            label_values=np.asarray(sorted(info.label_values), np.int64),
            fg_sample=np.asarray(info.fg_sample, np.float32),
            problems=np.asarray(json.dumps([p.to_dict() for p in problems])),
        )


def cached_check_case(
    case: dict[str, Any], atol: float, cache_dir: Path
) -> tuple[checks.CaseInfo | None, list[checks.Problem]]:
    """``check_case(case, atol)``, from ``cache_dir/checks/`` when the case's files have not changed since."""
    name = _name(case, atol)
    if name is None:
        return checks.check_case(case, atol)
    prefix, entry = name
    path = Path(cache_dir) / "checks" / entry
    if path.is_file():
        cached = _load(path)
        if cached is not None:
            return cached
    info, problems = checks.check_case(case, atol)
    if info is not None:
        with contextlib.suppress(OSError):  # a read-only or full cache only costs the next run the check
            _save(path, info, problems)
            for old in path.parent.glob("*.npz"):  # superseded entries of these files; unprefixed = first naming
                if old != path and (old.name.startswith(f"{prefix}-") or "-" not in old.stem):
                    old.unlink(missing_ok=True)
    return info, problems
