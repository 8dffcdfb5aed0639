"""Deterministic, seeded splits written once to ``splits.json``; an existing (user-edited) file wins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.discovery import DatasetError
from medseg.fileio import atomic_write_json


def train_val_split(case_ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded split of the sorted case ids; at least one validation and one training case."""
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise DatasetError(f"need at least 2 cases to carve a validation split, found {len(ids)}")
    n_val = min(max(1, int(round(val_fraction * len(ids)))), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    return {"train": [c for c in ids if c not in set(val)], "val": val}


Pending = list[tuple[Path, Any]]


def _save(path: Path, obj: Any, pending: Pending | None) -> None:
    """Write ``obj`` now, or (``pending``) leave it to the caller, who writes once the run is known to start."""
    if pending is None:
        atomic_write_json(path, obj)
    else:
        pending.append((path, obj))


def load_or_create_split(
    path: Path,
    case_ids: list[str],
    val_fraction: float,
    seed: int,
    in_use: bool = False,
    pending: Pending | None = None,
) -> dict[str, list[str]]:
    """Reuse ``path`` if it exists (validated against the dataset), else create and save a new split.

    A saved split records the ``seed`` and ``val_fraction`` it was drawn with; when they differ from the requested
    ones it is redrawn if nothing was trained on it yet, else refused (``in_use``). A file without them was written
    by a user and wins."""
    settings = {"seed": seed, "val_fraction": val_fraction}
    if path.is_file():
        split = _read_json(path)
        if not _stale(split, settings, path, in_use):
            validate_split(split, case_ids, path)
            return split
    split = {**train_val_split(case_ids, val_fraction, seed), **settings}
    _save(path, split, pending)
    return split


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err


def _stale(saved: Any, wanted: dict[str, Any], path: Path, in_use: bool) -> bool:
    """Whether a saved split was drawn with other settings than ``wanted`` (and may be redrawn).

    Raises:
        DatasetError: it differs and a model was already trained on it.
    """
    if not isinstance(saved, dict):
        return False
    differs = {k: (saved[k], v) for k, v in wanted.items() if k in saved and saved[k] != v}
    if not differs:
        return False
    what = ", ".join(f"{k}={old!r} (asked: {new!r})" for k, (old, new) in differs.items())
    if in_use:
        raise DatasetError(
            f"{path} was drawn with {what} and runs were trained on it: use a new hydra.run.dir for other splits "
            "(or pass the same settings to resume)"
        )
    return True


def validate_split(split: dict, case_ids: list[str], path: Path) -> None:
    """A split names only known cases, has non-empty train/val and no case in both."""
    known = set(case_ids)
    for key in ("train", "val"):
        if not isinstance(split.get(key), list) or not split[key]:
            raise DatasetError(f"{path}: '{key}' must be a non-empty list of case ids")
        unknown = sorted(set(split[key]) - known)
        if unknown:
            raise DatasetError(f"{path}: '{key}' names unknown cases {unknown}")
    both = sorted(set(split["train"]) & set(split["val"]))
    if both:
        raise DatasetError(f"{path}: cases {both} are in both 'train' and 'val'")


def kfold_splits(
    case_ids: list[str], n_folds: int, seed: int, val_fraction: float, inner_val: bool = True
) -> dict[str, Any]:
    """Seeded K-fold over sorted case ids; each fold's validation cases are carved from its training part.

    Model selection uses ``val`` only, so the ``test`` fold never influences the chosen checkpoint. With
    ``inner_val=False`` (nnU-Net's protocol, :func:`without_inner_val`) every fold trains on all its other cases and
    validates on its test fold.
    """
    ids = sorted(case_ids)
    if not 2 <= n_folds <= len(ids):
        raise DatasetError(f"cv.folds={n_folds} needs 2 ≤ folds ≤ number of cases ({len(ids)})")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    sizes = [len(ids) // n_folds + (1 if k < len(ids) % n_folds else 0) for k in range(n_folds)]
    folds, start = [], 0
    for k, size in enumerate(sizes):
        test = sorted(order[start : start + size])
        start += size
        rest = [c for c in ids if c not in set(test)]
        inner = train_val_split(rest, val_fraction, seed + 1 + k)
        folds.append({"fold": k, "train": inner["train"], "val": inner["val"], "test": test})
    splits = {"n_folds": n_folds, "seed": seed, "val_fraction": val_fraction, "folds": folds}
    return splits if inner_val else without_inner_val(splits)


def without_inner_val(splits: dict[str, Any]) -> dict[str, Any]:
    """The folds as nnU-Net runs them (``cv.inner_val=false``): train on every case outside the test fold, validate
    on the test fold. Checkpoint selection on those cases would be optimistic, so such runs test their final
    weights (docs/evaluation.md)."""
    folds = []
    for k, fold in enumerate(splits["folds"]):
        train = sorted((set(fold["train"]) | set(fold["val"])) - set(fold["test"]))
        folds.append({**fold, "fold": fold.get("fold", k), "train": train, "val": list(fold["test"])})
    return {**splits, "inner_val": False, "folds": folds}


def from_nnunet_splits(
    entries: list[Any], case_ids: list[str], seed: int, val_fraction: float, source: Path
) -> dict[str, Any]:
    """Our folds from nnU-Net's ``splits_final.json`` (a list of ``{"train", "val"}``): nnU-Net's ``val`` is the
    held-out fold (our ``test``); our validation cases are carved from its ``train`` (seeded, as in
    :func:`kfold_splits`) so that the test fold never selects the checkpoint."""
    folds = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), list) for key in ("train", "val")):
            raise DatasetError(f"{source}: nnU-Net fold {k} must be an object with 'train' and 'val' lists of case ids")
        train, test = sorted(map(str, entry["train"])), sorted(map(str, entry["val"]))
        if len(train) < 2:
            raise DatasetError(f"{source}: nnU-Net fold {k} has {len(train)} training case(s); need at least 2")
        inner = train_val_split(train, val_fraction, seed + 1 + k)
        folds.append({"fold": k, "train": inner["train"], "val": inner["val"], "test": test})
    splits = {"n_folds": len(folds), "seed": seed, "val_fraction": val_fraction, "source": "nnU-Net", "folds": folds}
    validate_cv_splits(splits, case_ids, source)
    return splits


def validate_cv_splits(splits: dict[str, Any], case_ids: list[str], path: Path) -> None:
    """Every fold names known cases, non-empty train/val/test, disjoint within a fold; test folds are disjoint."""
    folds = splits.get("folds")
    if not isinstance(folds, list) or not folds:
        raise DatasetError(f"{path}: expected a 'folds' list of {{train, val, test}} entries")
    known, seen_test = set(case_ids), dict[str, int]()
    for k, fold in enumerate(folds):
        for key in ("train", "val", "test"):
            if not isinstance(fold.get(key), list) or not fold[key]:
                raise DatasetError(f"{path}: fold {k}: '{key}' must be a non-empty list of case ids")
            unknown = sorted(set(fold[key]) - known)
            if unknown:
                raise DatasetError(f"{path}: fold {k}: '{key}' names unknown cases {unknown}")
        pairs = [("train", "val"), ("train", "test"), ("val", "test")]
        if splits.get("inner_val") is False:  # nnU-Net's protocol: validation on the test fold itself
            if sorted(fold["val"]) != sorted(fold["test"]):
                raise DatasetError(f"{path}: fold {k}: with inner_val false, 'val' must equal 'test'")
            pairs = pairs[:2]
        for a, b in pairs:
            both = sorted(set(fold[a]) & set(fold[b]))
            if both:
                raise DatasetError(f"{path}: fold {k}: cases {both} are in both '{a}' and '{b}'")
        for case in fold["test"]:
            if case in seen_test:
                raise DatasetError(f"{path}: case {case!r} is in the test set of folds {seen_test[case]} and {k}")
            seen_test[case] = k


def load_or_create_cv_splits(
    path: Path,
    case_ids: list[str],
    n_folds: int,
    seed: int,
    val_fraction: float,
    user_file: str | Path | None = None,
    in_use: bool = False,
    pending: Pending | None = None,
    inner_val: bool = True,
) -> dict[str, Any]:
    """A user split file (validated) wins, then an existing ``path`` drawn with the same settings (one drawn with
    others is redrawn when no fold trained on it yet, else refused); otherwise a new seeded K-fold is saved.

    A user file is ours (``{"folds": [{train, val, test}]}``) or nnU-Net's ``splits_final.json`` (a list of
    ``{train, val}``, converted by :func:`from_nnunet_splits`). ``inner_val=False`` validates every fold on its test
    fold (:func:`without_inner_val`, nnU-Net's protocol). With ``pending`` a new file is left to the caller to write.
    """
    source = Path(user_file).expanduser() if user_file else path
    wanted = {"n_folds": n_folds, "seed": seed, "val_fraction": val_fraction}
    if source.is_file():
        loaded = _read_json(source)
        if user_file or not _stale(loaded, wanted, source, in_use):
            splits = loaded
            if isinstance(splits, list):
                splits = from_nnunet_splits(splits, case_ids, seed, val_fraction, source)
            if not isinstance(splits, dict):
                raise DatasetError(f"{source}: expected a 'folds' list of {{train, val, test}} entries")
            validate_cv_splits(splits, case_ids, source)
            if splits.get("inner_val") is False and inner_val:
                raise DatasetError(
                    f"{source}: written with cv.inner_val=false (each fold validated on its test fold); set "
                    "cv.inner_val=false, or use another splits file"
                )
            if not inner_val and splits.get("inner_val") is not False:
                splits = without_inner_val(splits)
            if source != path or splits != loaded:
                _save(path, splits, pending)
            return splits
    if user_file:
        raise DatasetError(f"cv.splits_file={user_file}: file not found")
    splits = kfold_splits(case_ids, n_folds, seed, val_fraction, inner_val)
    _save(path, splits, pending)
    return splits
