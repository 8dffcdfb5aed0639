"""Resolving what ``medseg predict`` runs: which trained runs (train / CV / Turbolift) and which input cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

from medseg.data.io import is_image_file, strip_suffix

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "checkpoints").is_dir()


def resolve_runs(model_dir: str | Path, folds: list[int] | None = None) -> list[Path]:
    """Run dirs to ensemble: a train run itself, every (or the chosen) ``fold_<k>`` of a CV run, or the last stage
    of a Turbolift run (``turbolift_summary.json`` names it)."""
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise ValueError(f"-m {root}: not a folder")
    if is_run_dir(root):
        return [root]
    summary = root / "turbolift_summary.json"
    if summary.is_file():
        final = json.loads(summary.read_text()).get("final_stage_dir")
        if final:
            return resolve_runs(root / final, folds)
    fold_dirs = sorted((p for p in root.glob("fold_*") if is_run_dir(p)), key=lambda p: int(p.name.split("_")[1]))
    if folds is not None:
        chosen = [root / f"fold_{k}" for k in folds]
        missing = [str(p) for p in chosen if not is_run_dir(p)]
        if missing:
            raise ValueError(f"-m {root}: no trained fold at {missing}")
        return chosen
    if not fold_dirs:
        raise ValueError(f"-m {root}: neither a run dir (config.yaml + checkpoints/) nor a CV run (fold_<k>/)")
    return fold_dirs


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
