"""Which input cases ``medseg predict`` segments: files, folders, multi-channel groups (which trained runs it
loads: ``medseg.run_dir.trained_runs``)."""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.io import IMAGE_SUFFIXES, is_image_name, read_volume, strip_suffix

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def list_cases(inputs: str | Path, in_channels: int = 1) -> tuple[list[tuple[str, list[str]]], dict[str, str]]:
    """``[(case, [channel files])]`` from a file or a folder, plus ``{file name: why it is skipped}``.

    Hidden files (macOS ``._*`` metadata) are ignored; suffixes match in any letter case; broken symbolic links are
    reported. With ``in_channels > 1`` files are grouped nnU-Net style (``<case>_0000.nii.gz``, ``_0001``, …); a 4D
    file with ``in_channels`` volumes in its 4th dimension (MSD's layout) is a case of its own.
    """
    path = Path(inputs).expanduser()
    if not path.exists():
        raise ValueError(
            f"-i {path}: no such file or folder" + (" (a broken symbolic link)" if path.is_symlink() else "")
        )
    rejected: dict[str, str] = {}
    if path.is_file():
        if not is_image_name(path.name):
            raise ValueError(f"-i {path}: not a medical image file (expected {', '.join(IMAGE_SUFFIXES)})")
        files = [path]
    else:
        entries = sorted(p for p in path.iterdir() if is_image_name(p.name))
        files = [p for p in entries if p.is_file()]
        rejected = {
            p.name: "skipped: a broken symbolic link (target missing, or a loop)"
            for p in entries
            if p.is_symlink() and not p.exists()
        }
        if not files:
            raise ValueError(f"-i {path}: no {'/'.join(IMAGE_SUFFIXES)} files and no DICOM series")
    if in_channels == 1:
        return [(strip_suffix(p.name), [str(p)]) for p in files], rejected
    groups: dict[str, dict[int, str]] = {}
    four_d = []
    for p in files:
        if _channels_last(p) == in_channels:  # one 4D file holding every channel (MSD BrainTumour, Prostate)
            four_d.append((strip_suffix(p.name), [str(p)]))
            continue
        match = _CHANNEL.match(strip_suffix(p.name))
        if match is None:
            rejected[p.name] = f"skipped: not named <case>_<4-digit channel> ({in_channels} channels expected)"
            continue
        groups.setdefault(match["case"], {})[int(match["ch"])] = str(p)
    cases = []
    for case, chans in sorted(groups.items()):
        if sorted(chans) != list(range(in_channels)):
            have = ", ".join(f"{c:04d}" for c in sorted(chans))
            for f in chans.values():
                rejected[Path(f).name] = (
                    f"skipped: case {case} has channels {have}, the model needs 0000..{in_channels - 1:04d}"
                )
            continue
        cases.append((case, [chans[c] for c in range(in_channels)]))
    return sorted(cases + four_d), rejected


def _channels_last(path: Path) -> int | None:
    """The 4th dimension of a 4D image file (its channels), else None."""
    try:
        shape = read_volume(path, header_only=True)[0]
    except (OSError, ValueError):
        return None
    return int(shape[3]) if len(shape) == 4 else None


def dicom_cases(folder: str | Path) -> tuple[list[tuple[str, list[str]]], dict[str, str]] | None:
    """``([(case, [series reference])], {folder: why it was refused})`` for the DICOM series under ``folder`` (itself
    and its sub-folders); None when it holds no DICOM series. A case is named by its folder, or by its
    SeriesInstanceUID when a folder holds several series."""
    from medseg.data.dicom import SeriesError, check_series, find_series

    found = find_series(folder)
    if not found:
        return None
    cases, refused = [], {}
    for series in found:
        try:
            check_series(series.ref)
        except SeriesError as err:
            refused[series.ref] = f"skipped: {err}"
            continue
        cases.append((series.name, [series.ref]))
    return cases, refused
