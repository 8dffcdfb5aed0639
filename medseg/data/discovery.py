"""Dataset discovery under one ``data.root``: MSD task folders, nnU-Net raw datasets, or images/ + labels/ folders.

A case is ``{"id": str, "image": [paths, one per channel], "label": path or None}``. Entries of ``dataset.json`` that
cannot be used (a path escaping the dataset root, a malformed entry) are collected in ``DatasetSpec.problems`` as
``(case, path, message)``, and their cases left out, so that ``check_dataset`` lists them with every other problem.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.io import is_image_file, is_image_name, strip_suffix


class DatasetError(ValueError):
    """A dataset that cannot be used; the message lists every problem found."""


@dataclass
class DatasetSpec:
    """What discovery found: layout, cases, label names and channel names."""

    root: Path
    layout: str
    cases: list[dict[str, Any]]
    labels: dict[int, str] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """``CT`` when the first channel is CT (CT normalisation), else ``MRI`` (per-case z-score)."""
        return "CT" if self.channels and self.channels[0].strip().upper() == "CT" else "MRI"

    @property
    def num_classes(self) -> int | None:
        return max(self.labels) + 1 if self.labels else None


def discover(root: str | Path, strict: bool = True) -> DatasetSpec:
    """Detect the layout of ``root`` and list its training cases.

    Args:
        root: the dataset folder.
        strict: raise one ``DatasetError`` listing every unusable ``dataset.json`` entry (paths escaping the root,
            malformed entries); with False they are returned in ``spec.problems`` (what ``check_dataset`` reports).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root={root}: not a folder")
    meta = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    spec = _detect(root, meta)
    if strict and spec.problems:
        lines = "\n".join(f"  - {case}: {path}: {msg}" for case, path, msg in spec.problems)
        raise DatasetError(f"data.root={root}: {len(spec.problems)} unusable dataset.json entries:\n{lines}")
    return spec


def _detect(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    if isinstance(meta.get("training"), list):
        return _msd(root, meta)
    if (root / "imagesTr").is_dir():
        return _nnunet(root, meta)
    if (root / "images").is_dir():
        return _folders(root, meta)
    raise DatasetError(
        f"data.root={root}: no dataset found. Expected an MSD task (dataset.json with a 'training' list), an nnU-Net "
        "raw dataset (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json) or images/ + labels/ folders."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError: invalid JSON or not UTF-8
        raise DatasetError(f"{path}: cannot parse ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return data


def _inside(root: Path, rel: Any, what: str) -> Path:
    """``root / rel``, normalised as written; a ``DatasetError`` when it is not a path string or lies outside ``root``.

    The path is judged lexically (``..`` and absolute paths), not where a symbolic link points: a dataset assembled
    from symlinks to another folder is legitimate, ``../../etc/passwd`` is not.
    """
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{what} path must be a non-empty string, got {rel!r}")
    if "\0" in rel:
        raise DatasetError(f"{what} path {rel!r} is not a valid path (NUL byte)")
    base = os.path.normpath(root.absolute())
    path = os.path.normpath(os.path.join(base, rel))
    if os.path.commonpath([base, path]) != base:
        raise DatasetError(f"{what} path {rel!r} escapes the dataset root")
    return Path(path)


def _msd(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    cases, problems = [], []
    where = str(root / "dataset.json")
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            problems.append((f"training[{i}]", where, "needs an 'image' entry"))
            continue
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        try:
            if not images:
                raise DatasetError("'image' is an empty list")
            paths = [_inside(root, p, "image") for p in images]
            label = _inside(root, entry["label"], "label") if entry.get("label") else None
        except DatasetError as err:
            problems.append((_entry_name(i, images), where, f"training[{i}]: {err}"))
            continue
        cases.append({"id": strip_suffix(paths[0].name), "image": [str(p) for p in paths], "label": _opt(label)})
    labels, channels = _labels_and_channels(meta, where, problems)
    return DatasetSpec(root, "msd", cases, labels, channels, problems)


def _entry_name(i: int, images: list[Any]) -> str:
    """A case name for a problem report: the image's file name when it is a string, else ``training[i]``."""
    return strip_suffix(Path(images[0]).name) if images and isinstance(images[0], str) else f"training[{i}]"


def _labels_and_channels(
    meta: dict[str, Any], where: str, problems: list[tuple[str, str, str]]
) -> tuple[dict[int, str], list[str]]:
    """``labels`` and channel names of ``dataset.json``; a malformed entry becomes a problem (and is left out)."""
    try:
        labels = parse_labels(meta)
    except DatasetError as err:
        problems.append(("-", where, str(err)))
        labels = {}
    try:
        channels = _channels(meta)
    except DatasetError as err:
        problems.append(("-", where, str(err)))
        channels = []
    return labels, channels


def _broken_links(folder: Path) -> list[tuple[str, str, str]]:
    """Image-named entries of ``folder`` that are symbolic links to nothing (or to themselves): reported, since
    listing them as missing cases or skipping them silently would hide a mistake."""
    out = []
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if is_image_name(path.name) and path.is_symlink() and not path.exists():
                out.append((strip_suffix(path.name), str(path), "a broken symbolic link (target missing, or a loop)"))
    return out


def _nnunet(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str):
        raise DatasetError(f"{root / 'dataset.json'}: file_ending must be a string like '.nii.gz', got {ending!r}")
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    by_case: dict[str, dict[int, str]] = {}
    for path in sorted((root / "imagesTr").iterdir()):
        if path.name.startswith(".") or (path.is_symlink() and not path.exists()):
            continue  # macOS ._* metadata, hidden files; broken links are reported above
        match = pattern.match(path.name)
        if match:
            by_case.setdefault(match["case"], {})[int(match["ch"])] = str(path)
    problems = _broken_links(root / "imagesTr") + _broken_links(root / "labelsTr")
    labels, channels = _labels_and_channels(meta, str(root / "dataset.json"), problems)
    n_channels = len(channels) or max((len(v) for v in by_case.values()), default=1)
    cases = []
    for case_id, chans in sorted(by_case.items()):
        images = [chans.get(c, str(root / "imagesTr" / f"{case_id}_{c:04d}{ending}")) for c in range(n_channels)]
        label = root / "labelsTr" / f"{case_id}{ending}"
        cases.append({"id": case_id, "image": images, "label": str(label)})
    return DatasetSpec(root, "nnunet", cases, labels, channels, problems)


def _folders(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    label_dir = root / "labels"
    cases = []
    for path in sorted(p for p in (root / "images").iterdir() if is_image_file(p)):
        case_id = strip_suffix(path.name)
        matches = [p for p in label_dir.glob(f"{case_id}.*") if is_image_file(p) and strip_suffix(p.name) == case_id]
        label = matches[0] if matches else label_dir / path.name
        cases.append({"id": case_id, "image": [str(path)], "label": str(label)})
    problems = _broken_links(root / "images") + _broken_links(label_dir)
    labels, channels = _labels_and_channels(meta, str(root / "dataset.json"), problems)
    return DatasetSpec(root, "folders", cases, labels, channels, problems)


def parse_labels(meta: dict[str, Any]) -> dict[int, str]:
    """Label values → names from MSD (``{"1": "liver"}``) or nnU-Net (``{"liver": 1}``) style ``labels``."""
    out: dict[int, str] = {}
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise DatasetError(f"dataset.json: 'labels' must be an object, got {type(labels).__name__}")
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):
            out[value] = str(key)
        elif str(key).lstrip("-").isdigit():
            out[int(key)] = str(value)
        else:
            raise DatasetError(
                f"dataset.json: label entry {key!r}: {value!r} is neither 'value: name' nor 'name: value'"
            )
    return out


def _channels(meta: dict[str, Any]) -> list[str]:
    names = meta.get("channel_names") or meta.get("modality") or {}
    if not isinstance(names, dict):
        raise DatasetError(f"dataset.json: 'channel_names'/'modality' must be an object, got {type(names).__name__}")
    return [str(v) for _, v in sorted(names.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0)]


def _opt(path: Path | None) -> str | None:
    return str(path) if path is not None else None
