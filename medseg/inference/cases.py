"""Which input cases ``medseg predict`` segments: files, folders, multi-channel groups (which trained runs it
loads: ``medseg.run_dir.trained_runs``)."""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.io import is_image_file, strip_suffix

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def list_cases(inputs: str | Path, in_channels: int = 1) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """``[(case, [channel files])]`` from a file or a folder, plus the files that could not be grouped.

    With ``in_channels > 1`` files are grouped nnU-Net style (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``, …).
    """
    path = Path(inputs).expanduser()
    if not path.exists():
        raise ValueError(f"-i {path}: no such file or folder")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if is_image_file(p))
    if path.is_dir() and not files:
        raise ValueError(f"-i {path}: no .nii/.nii.gz/.nrrd/.mha/.mhd files")
    if in_channels == 1:
        return [(strip_suffix(p.name), [str(p)]) for p in files], []
    groups: dict[str, dict[int, str]] = {}
    rejected = []
    for p in files:
        match = _CHANNEL.match(strip_suffix(p.name))
        if match is None:
            rejected.append(str(p))
            continue
        groups.setdefault(match["case"], {})[int(match["ch"])] = str(p)
    cases = []
    for case, chans in sorted(groups.items()):
        if sorted(chans) != list(range(in_channels)):
            rejected += list(chans.values())
            continue
        cases.append((case, [chans[c] for c in range(in_channels)]))
    return cases, rejected
