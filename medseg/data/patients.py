"""Patients across the stages of a chain (Turbolift): which case ids are the same person, and folds by patient.

A chain's stages usually image the same patients (a patient's CT, then their CBCT), under case ids that may differ
per stage. Folds must then be drawn per *patient*, never per case, or a fold's test patient can sit in the training
data of the model it starts from. These are pure functions; ``medseg.workflows.turbolift_plan`` applies them.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medseg.data.discovery import DatasetError


def patient_map(
    case_ids: Sequence[str], stage: str, regex: str | None = None, csv_file: str | Path | None = None
) -> dict[str, str]:
    """``{case id: patient id}`` of one stage's cases.

    Args:
        case_ids: the stage's case ids.
        stage: the stage's name (selects the rows of ``csv_file`` with that ``stage``).
        regex: a pattern searched in each case id; the patient id is its group named ``patient``, else its first
            group, else the whole match (e.g. ``(\\d+)$``: ``ct_007`` and ``cbct_007`` are patient ``007``).
        csv_file: a CSV with columns ``case``, ``patient`` and optionally ``stage`` (rows with an empty or absent
            stage apply to every stage); it wins over ``regex``.

    Without either, a case id is its patient id: equal ids at two stages are the same patient.

    Raises:
        DatasetError: when the regex does not match a case id or the CSV does not name one (all of them listed).
    """
    if csv_file:
        table = _read_csv(Path(csv_file), stage)
        missing = [c for c in case_ids if c not in table]
        if missing:
            raise DatasetError(
                f"patients.csv={csv_file}: no patient for {len(missing)} case(s) of stage {stage!r}: "
                f"{', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}"
            )
        return {c: table[c] for c in case_ids}
    if regex:
        pattern = re.compile(regex)
        out, unmatched = {}, []
        for case in case_ids:
            m = pattern.search(case)
            if m is None:
                unmatched.append(case)
                continue
            group = "patient" if "patient" in pattern.groupindex else (1 if pattern.groups else 0)
            out[case] = m.group(group)
        if unmatched:
            raise DatasetError(
                f"patients.regex={regex!r} does not match {len(unmatched)} case id(s) of stage {stage!r}: "
                f"{', '.join(unmatched[:10])}{' …' if len(unmatched) > 10 else ''}"
            )
        return out
    return {c: c for c in case_ids}


def _read_csv(path: Path, stage: str) -> dict[str, str]:
    if not path.is_file():
        raise DatasetError(f"patients.csv={path}: file not found")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"case", "patient"} <= set(reader.fieldnames):
            raise DatasetError(f"patients.csv={path}: needs the columns 'case' and 'patient' (and optionally 'stage')")
        table: dict[str, str] = {}
        for row in reader:
            if (row.get("stage") or "").strip() in ("", stage):
                table[row["case"].strip()] = row["patient"].strip()
    return table


def assign_patient_folds(stages: Sequence[Mapping[str, str]], n_folds: int, seed: int) -> dict[str, int]:
    """``{patient: test fold}``: each patient gets one fold, the same at every stage.

    Stages are given in priority order (the final stage first). Each stage's fold sizes aim at the K-fold sizes of
    its case count (``n // K``, the first ``n % K`` folds one more); its still unassigned patients, in a seeded random
    order (``default_rng(seed)`` per stage), go to the lowest fold with room left, else to the fold with the fewest of
    its cases. With one case per patient and no patient shared with an earlier-priority stage this is exactly
    :func:`medseg.data.splits.kfold_splits`'s test folds.

    Args:
        stages: ``{case: patient}`` of each stage that runs CV, in priority order.
        n_folds: number of folds.
        seed: seed of the order.
    """
    fold_of: dict[str, int] = {}
    for cases in stages:
        per_patient = Counter(cases.values())
        n = len(cases)
        target = [n // n_folds + (1 if k < n % n_folds else 0) for k in range(n_folds)]
        counts = [0] * n_folds
        for patient, n_cases in per_patient.items():
            if patient in fold_of:
                counts[fold_of[patient]] += n_cases
        new = sorted(p for p in per_patient if p not in fold_of)
        for i in np.random.default_rng(seed).permutation(len(new)):
            size = per_patient[new[i]]
            room = [k for k in range(n_folds) if counts[k] + size <= target[k]]
            k = room[0] if room else min(range(n_folds), key=lambda j: (counts[j], j))
            fold_of[new[i]] = k
            counts[k] += size
    return fold_of


def grouped_train_val(cases: Mapping[str, str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded train/validation split that keeps each patient's cases together.

    Patients are drawn in a seeded order into validation until it holds ``round(val_fraction × cases)`` cases (at
    least one, leaving at least one patient for training). With one case per patient it is exactly
    :func:`medseg.data.splits.train_val_split`.

    Raises:
        DatasetError: when fewer than two patients are left to split.
    """
    patients = sorted(set(cases.values()))
    if len(patients) < 2:
        raise DatasetError(f"need at least 2 patients to carve a validation split, found {len(patients)}")
    target = min(max(1, int(round(val_fraction * len(cases)))), len(cases) - 1)
    val_patients: set[str] = set()
    n_val = 0
    for i in np.random.default_rng(seed).permutation(len(patients)):
        if n_val >= target or len(val_patients) == len(patients) - 1:
            break
        val_patients.add(patients[i])
        n_val += sum(1 for p in cases.values() if p == patients[i])
    ids = sorted(cases)
    return {
        "train": [c for c in ids if cases[c] not in val_patients],
        "val": [c for c in ids if cases[c] in val_patients],
    }
