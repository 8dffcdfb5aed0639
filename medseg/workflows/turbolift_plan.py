"""Leakage-free folds for a Turbolift chain, and the audit that proves it.

Rules (docs/turbolift.md, docs/evaluation.md):

1. A patient has one test fold, the same at every CV stage (:func:`medseg.data.patients.assign_patient_folds`).
2. Fold k of a CV stage tests the cases of fold-k patients and trains/validates on the others' cases.
3. A ``cv: false`` stage trains one model on all its cases only when none of its patients is tested at a later
   stage and no earlier stage has per-fold models; otherwise it trains one model per fold, fold k leaving out the
   cases of fold-k patients that a later stage tests (they are excluded, listed in the plan).
4. The audit: for every CV stage and fold of a chain, the test patients ∩ the train/val patients of every ancestor
   model of that fold must be empty. Turbolift refuses to train a chain whose audit is not clean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medseg.data.discovery import DatasetError
from medseg.data.patients import grouped_train_val
from medseg.run_dir import RunDir

CV, SINGLE, PER_FOLD = "cv", "single", "per_fold"
RULE = (
    "one test fold per patient at every CV stage; for each CV stage and fold, the test patients must not be among "
    "the train/val patients of any model the fold descends from (overlaps listed, must be empty)"
)


@dataclass
class StagePlan:
    """One stage of a chain: how it trains (``cv``, ``single``, ``per_fold``) and on which cases.

    ``splits`` is the CV splits dict (``cv``), one ``{train, val}`` (``single``) or a list of them (``per_fold``);
    ``excluded[k]`` are the cases fold k leaves out of training because a later stage tests their patients.
    """

    name: str
    mode: str
    cases: dict[str, str]
    splits: Any
    excluded: list[list[str]] = field(default_factory=list)


def plan_chain(
    names: Sequence[str],
    cases: Sequence[Mapping[str, str]],
    use_cv: Sequence[bool],
    fold_of: Mapping[str, int],
    n_folds: int,
    val_fraction: Sequence[float],
    seed: int,
) -> list[StagePlan]:
    """The splits of every stage of one chain (rules in the module docstring).

    Args:
        names: stage names, in chain order.
        cases: ``{case: patient}`` of each stage.
        use_cv: whether each stage runs CV (the last one always does).
        fold_of: ``{patient: test fold}`` for every patient of a CV stage.
        n_folds: folds.
        val_fraction: each stage's share of a training part held out for validation (by patient).
        seed: split seed (validation of fold k uses ``seed + 1 + k``, as :func:`~medseg.data.splits.kfold_splits`).

    Raises:
        DatasetError: when a fold would have no test case, or too few patients left to train and validate.
    """
    plans: list[StagePlan] = []
    per_fold_before = False
    for s, (name, stage_cases) in enumerate(zip(names, cases, strict=True)):
        tested_later = {p for t in range(s + 1, len(names)) if use_cv[t] for p in cases[t].values()}
        vf = val_fraction[s]
        if use_cv[s]:
            splits = _cv_splits(name, stage_cases, fold_of, n_folds, vf, seed)
            plans.append(StagePlan(name, CV, dict(stage_cases), splits))
            per_fold_before = True
            continue
        excluded = [
            sorted(c for c, p in stage_cases.items() if p in tested_later and fold_of.get(p) == k)
            for k in range(n_folds)
        ]
        if not any(excluded) and not per_fold_before:
            plans.append(StagePlan(name, SINGLE, dict(stage_cases), _train_val(name, stage_cases, vf, seed)))
            continue
        per_fold = []
        for k in range(n_folds):
            kept = {c: p for c, p in stage_cases.items() if c not in set(excluded[k])}
            per_fold.append(_train_val(f"{name}, fold {k}", kept, vf, seed + 1 + k))
        plans.append(StagePlan(name, PER_FOLD, dict(stage_cases), per_fold, excluded))
        per_fold_before = True
    return plans


def _train_val(where: str, cases: Mapping[str, str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    try:
        return grouped_train_val(cases, val_fraction, seed)
    except DatasetError as err:
        raise DatasetError(
            f"stage {where}: {err} after leaving out the patients tested at later stages; use fewer folds "
            "(cv.folds) or give this stage more patients of its own"
        ) from None


def _cv_splits(
    name: str, cases: Mapping[str, str], fold_of: Mapping[str, int], n_folds: int, val_fraction: float, seed: int
) -> dict[str, Any]:
    folds: list[dict[str, Any]] = []
    for k in range(n_folds):
        test = sorted(c for c, p in cases.items() if fold_of[p] == k)
        if not test:
            raise DatasetError(
                f"stage {name}: fold {k} has no test case (the patients of its {len(cases)} cases all fall in other "
                "folds, which earlier-priority stages fixed); use fewer folds (cv.folds)"
            )
        rest = {c: p for c, p in cases.items() if fold_of[p] != k}
        inner = _train_val(f"{name}, fold {k}", rest, val_fraction, seed + 1 + k)
        folds.append({"fold": k, "train": inner["train"], "val": inner["val"], "test": test})
    return {
        "n_folds": n_folds,
        "seed": seed,
        "val_fraction": val_fraction,
        "patient_folds": True,
        "test_patients": [sorted({cases[c] for c in f["test"]}) for f in folds],
        "folds": folds,
    }


def fold_model_split(run: RunDir, k: int) -> dict[str, list[str]] | None:
    """The train/val cases of the model that fold ``k`` uses from stage run ``run`` (its own fold for CV and
    per-fold stages, the single model otherwise), read from the ``splits.json`` files the stage trains with; None
    when the stage has none yet."""
    if run.splits.is_file():
        splits = run.read_json(run.splits)
        if "folds" in splits:
            return splits["folds"][k]
        return splits
    fold = run.fold(k)
    return fold.read_json(fold.splits) if fold.splits.is_file() else None


Ancestor = tuple[str, Sequence[str], Mapping[str, str]]


def audit_fold(test: Sequence[str], test_cases: Mapping[str, str], ancestors: Sequence[Ancestor]) -> dict[str, Any]:
    """The leakage audit of one fold: its test patients against every ancestor model's train/val patients.

    Args:
        test: the fold's test case ids.
        test_cases: ``{case: patient}`` of the tested stage.
        ancestors: ``(name, train + val case ids, {case: patient})`` of each model the fold descends from.

    Returns:
        ``{"test": n, "test_patients": n, "ancestors": [{"model", "train_val", "shared_patients", "shared_ids"}],
        "leaks": number of ancestors sharing a patient or a case id}``.
    """
    patients = {test_cases[c] for c in test}
    rows, leaks = [], 0
    for name, ids, mapping in ancestors:
        shared_patients = sorted(patients & {mapping[c] for c in ids})
        shared_ids = sorted(set(test) & set(ids))
        leaks += bool(shared_patients or shared_ids)
        rows.append(
            {"model": name, "train_val": len(ids), "shared_patients": shared_patients, "shared_ids": shared_ids}
        )
    return {"test": len(test), "test_patients": len(patients), "ancestors": rows, "leaks": leaks}


def audit_chain(runs: Sequence[RunDir], cases: Sequence[Mapping[str, str]], root: RunDir) -> list[dict[str, Any]]:
    """The audit of every fold of every CV stage of a chain of stage runs (in chain order), read from their
    ``splits.json`` files. ``root`` names the models relative to the Turbolift run."""
    out = []
    for s, run in enumerate(runs):
        if not run.splits.is_file() or "folds" not in run.read_json(run.splits):
            continue  # not a CV stage
        for k, fold in enumerate(run.read_json(run.splits)["folds"]):
            ancestors = []
            for a in range(s):
                split = fold_model_split(runs[a], k)
                if split is None:
                    raise DatasetError(f"{runs[a].path}: no splits.json: the chain's splits were not written")
                name = _model_name(runs[a], k, root)
                ancestors.append((name, [*split["train"], *split["val"]], cases[a]))
            out.append({"stage": _rel(run, root), "fold": k, **audit_fold(fold["test"], cases[s], ancestors)})
    return out


def _model_name(run: RunDir, k: int, root: RunDir) -> str:
    if run.splits.is_file() and "folds" not in run.read_json(run.splits):
        return _rel(run, root)
    return _rel(run.fold(k), root)


def _rel(run: RunDir, root: RunDir) -> str:
    try:
        return str(run.path.relative_to(root.path))
    except ValueError:
        return str(run.path)
