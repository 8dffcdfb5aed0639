"""Dataset discovery under one ``data.root``: MSD task folders, nnU-Net raw datasets, or images/ + labels/ folders.

A case is ``{"id": str, "image": [paths, one per channel], "label": path or None}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.io import is_image_file, strip_suffix


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

    @property
    def modality(self) -> str:
        """``CT`` when the first channel is CT (CT normalisation), else ``MRI`` (per-case z-score)."""
        return "CT" if self.channels and self.channels[0].strip().upper() == "CT" else "MRI"

    @property
    def num_classes(self) -> int | None:
        return max(self.labels) + 1 if self.labels else None


def discover(root: str | Path) -> DatasetSpec:
    """Detect the layout of ``root`` and list its training cases."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root={root}: not a folder")
    meta = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
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
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: cannot parse ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return data


def _inside(root: Path, rel: str, what: str) -> Path:
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DatasetError(f"{root / 'dataset.json'}: {what} path {rel!r} escapes the dataset root")
    return path


def _msd(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    cases = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatasetError(f"{root / 'dataset.json'}: training[{i}] needs an 'image' entry")
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        paths = [_inside(root, p, "image") for p in images]
        label = _inside(root, entry["label"], "label") if entry.get("label") else None
        cases.append({"id": strip_suffix(paths[0].name), "image": [str(p) for p in paths], "label": _opt(label)})
    return DatasetSpec(root, "msd", cases, parse_labels(meta), _channels(meta))


def _nnunet(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    ending = meta.get("file_ending", ".nii.gz")
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    by_case: dict[str, dict[int, str]] = {}
    for path in sorted((root / "imagesTr").iterdir()):
        match = pattern.match(path.name)
        if match:
            by_case.setdefault(match["case"], {})[int(match["ch"])] = str(path)
    names = meta.get("channel_names") or meta.get("modality") or {}
    n_channels = len(names) or max((len(v) for v in by_case.values()), default=1)
    cases = []
    for case_id, chans in sorted(by_case.items()):
        images = [chans.get(c, str(root / "imagesTr" / f"{case_id}_{c:04d}{ending}")) for c in range(n_channels)]
        label = root / "labelsTr" / f"{case_id}{ending}"
        cases.append({"id": case_id, "image": images, "label": str(label)})
    return DatasetSpec(root, "nnunet", cases, parse_labels(meta), _channels(meta))


def _folders(root: Path, meta: dict[str, Any]) -> DatasetSpec:
    label_dir = root / "labels"
    cases = []
    for path in sorted(p for p in (root / "images").iterdir() if is_image_file(p)):
        case_id = strip_suffix(path.name)
        matches = [p for p in label_dir.glob(f"{case_id}.*") if is_image_file(p) and strip_suffix(p.name) == case_id]
        label = matches[0] if matches else label_dir / path.name
        cases.append({"id": case_id, "image": [str(path)], "label": str(label)})
    return DatasetSpec(root, "folders", cases, parse_labels(meta), _channels(meta))


def parse_labels(meta: dict[str, Any]) -> dict[int, str]:
    """Label values → names from MSD (``{"1": "liver"}``) or nnU-Net (``{"liver": 1}``) style ``labels``."""
    out: dict[int, str] = {}
    for key, value in (meta.get("labels") or {}).items():
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
    return [str(v) for _, v in sorted(names.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0)]


def _opt(path: Path | None) -> str | None:
    return str(path) if path is not None else None
