"""Issue 17, item 1: patient-aware folds across a Turbolift chain, and the leakage audit — chains with shared, partly
shared and disjoint patients, patient maps by regex and CSV, refusals, and an old-style leaky chain the audit
catches. Pure planning: nothing trains here (tests/workflows/test_turbolift.py runs a chain end to end)."""

from __future__ import annotations

import pytest

from medseg.data.discovery import DatasetError
from medseg.data.patients import assign_patient_folds, grouped_train_val, patient_map
from medseg.data.splits import kfold_splits, train_val_split
from medseg.run_dir import RunDir
from medseg.workflows.turbolift import write_plan
from medseg.workflows.turbolift_plan import CV, PER_FOLD, SINGLE, StagePlan, audit_chain, plan_chain

FOLDS, SEED = 3, 12345


def _ids(prefix: str, numbers) -> list[str]:  # noqa: ANN001
    return [f"{prefix}_{i:03d}" for i in numbers]


def _plan(tmp_path, stage_cases: list[dict[str, str]], use_cv: list[bool], folds: int = FOLDS):  # noqa: ANN202
    """Plan a chain (names s0, s1, ...), write its splits into run dirs, and audit it from the files."""
    cv_first = [c for c, flag in reversed(list(zip(stage_cases, use_cv, strict=True))) if flag]
    fold_of = assign_patient_folds(cv_first, folds, SEED)
    names = [f"s{i}" for i in range(len(stage_cases))]
    plans = plan_chain(names, stage_cases, use_cv, fold_of, folds, [0.25] * len(names), SEED)
    root = RunDir(tmp_path / "tl")
    runs = [root.stage(i, n) for i, n in enumerate(names)]
    for plan, run in zip(plans, runs, strict=True):
        write_plan(plan, run)
    return fold_of, plans, audit_chain(runs, stage_cases, root)


def _identity(ids: list[str]) -> dict[str, str]:
    return {c: c for c in ids}


def _test_patients(plan: StagePlan, k: int) -> set[str]:
    return {plan.cases[c] for c in plan.splits["folds"][k]["test"]}


def test_shared_patients_same_fold_everywhere_and_an_empty_audit(tmp_path):
    """Ten patients imaged at three stages (CT one model, CBCT and CBCT-TST with CV), the final stage six of them."""
    ct, cbct, tst = (_identity(_ids("p", range(10))), _identity(_ids("p", range(10))), _identity(_ids("p", range(6))))
    fold_of, plans, audit = _plan(tmp_path, [ct, cbct, tst], [False, True, True])
    assert [p.mode for p in plans] == [PER_FOLD, CV, CV]
    assert sorted(len(f["test"]) for f in plans[2].splits["folds"]) == [2, 2, 2]  # the final stage is balanced
    for k in range(FOLDS):  # a patient's test fold is the same at every CV stage
        assert _test_patients(plans[2], k) <= _test_patients(plans[1], k)
        assert _test_patients(plans[1], k) == {p for p, f in fold_of.items() if f == k}
        # the CT model of fold k left out exactly the CT cases of fold-k patients (all of them are tested later)
        assert plans[0].excluded[k] == sorted(c for c in ct if fold_of[c] == k)
        assert not set(plans[0].splits[k]["train"] + plans[0].splits[k]["val"]) & set(plans[0].excluded[k])
    assert len(audit) == 2 * FOLDS  # every fold of both CV stages
    for row in audit:
        assert row["leaks"] == 0 and all(a["shared_patients"] == [] == a["shared_ids"] for a in row["ancestors"])
    final = [r for r in audit if r["stage"] == "stage_2_s2"]
    assert [a["model"] for a in final[1]["ancestors"]] == ["stage_0_s0/fold_1", "stage_1_s1/fold_1"]


def test_partly_shared_patients_exclude_only_the_shared_ones(tmp_path):
    """CT: 6 own patients + p00-p09; CBCT: p00-p09; final: p04-p09 + 2 of its own. Only CT cases of patients tested
    later in the same fold are left out; the CT-only patients always train."""
    ct = _identity(_ids("x", range(6)) + _ids("p", range(10)))
    cbct = _identity(_ids("p", range(10)))
    tst = _identity(_ids("p", range(4, 10)) + _ids("y", range(2)))
    fold_of, plans, audit = _plan(tmp_path, [ct, cbct, tst], [False, True, True])
    assert plans[0].mode == PER_FOLD
    for k in range(FOLDS):
        assert plans[0].excluded[k] == sorted(c for c in _ids("p", range(10)) if fold_of[c] == k)
        kept = set(plans[0].splits[k]["train"] + plans[0].splits[k]["val"])
        assert set(_ids("x", range(6))) <= kept  # never tested later: always trained on
    assert sum(r["leaks"] for r in audit) == 0
    assert sorted(len(f["test"]) for f in plans[2].splits["folds"]) == [2, 3, 3]  # 8 final cases over 3 folds


def test_disjoint_patients_keep_one_first_stage_model(tmp_path):
    ct, cbct, tst = _identity(_ids("ct", range(8))), _identity(_ids("cbct", range(6))), _identity(_ids("tst", range(6)))
    _, plans, audit = _plan(tmp_path, [ct, cbct, tst], [False, True, True])
    assert [p.mode for p in plans] == [SINGLE, CV, CV]
    assert plans[0].splits == train_val_split(list(ct), 0.25, SEED)  # one model on all its cases, as before
    assert sum(r["leaks"] for r in audit) == 0 and audit[0]["ancestors"][0]["model"] == "stage_0_s0"
    # the reversed chain (cbct → ct → tst): the one-model stage now follows a CV stage, so it runs per fold
    # (fold k from fold k), leaving nothing out
    _, reverse, audit = _plan(tmp_path / "rev", [cbct, ct, tst], [True, False, True])
    assert reverse[1].mode == PER_FOLD and reverse[1].excluded == [[], [], []]
    assert sum(r["leaks"] for r in audit) == 0


def test_patient_maps_by_regex_and_csv(tmp_path):
    ct = patient_map(_ids("ct", range(4)), "ct", regex=r"(\d+)$")
    cbct = patient_map(_ids("cbct", range(4)), "cbct", regex=r"_(?P<patient>\d+)")
    assert ct["ct_002"] == cbct["cbct_002"] == "002"
    with pytest.raises(DatasetError, match=r"does not match 1 case id\(s\) of stage 'ct': scout"):
        patient_map(["ct_001", "scout"], "ct", regex=r"(\d+)$")
    table = tmp_path / "patients.csv"
    table.write_text("case,patient,stage\nA1,anna,\nB7,bob,cbct\nB7,bert,ct\n")
    assert patient_map(["A1", "B7"], "cbct", csv_file=table) == {"A1": "anna", "B7": "bob"}
    assert patient_map(["A1", "B7"], "ct", csv_file=table) == {"A1": "anna", "B7": "bert"}
    with pytest.raises(DatasetError, match="no patient for 1 case"):
        patient_map(["A1", "C3"], "ct", csv_file=table)
    # ids that differ per stage but name the same patients: the regex makes the chain leakage-free
    cases = [{c: c.split("_")[1] for c in _ids(pre, range(6))} for pre in ("ct", "cbct", "tst")]
    _, plans, audit = _plan(tmp_path, cases, [False, True, True])
    assert plans[0].mode == PER_FOLD and sum(r["leaks"] for r in audit) == 0


def test_grouped_split_keeps_a_patients_cases_together():
    cases = {"a1": "a", "a2": "a", "b1": "b", "c1": "c", "c2": "c", "d1": "d"}
    split = grouped_train_val(cases, 0.34, 3)
    for patient in "abcd":
        sides = {side for side, ids in split.items() for c in ids if cases[c] == patient}
        assert len(sides) == 1, patient
    ids = _ids("x", range(9))  # one case per patient: exactly the plain seeded split
    assert grouped_train_val(_identity(ids), 0.25, 7) == train_val_split(ids, 0.25, 7)


def test_impossible_chains_are_refused(tmp_path):
    """A fold without a test case, or a first stage with nothing left to train on, is refused with a message."""
    final = _identity(_ids("p", range(6)))
    fold_of = assign_patient_folds([final], FOLDS, SEED)
    first = {p: p for p in final if fold_of[p] != 2}  # its patients: only those the final stage tests in folds 0, 1
    with pytest.raises(DatasetError, match="stage s0: fold 2 has no test case"):
        _plan(tmp_path / "a", [first, final], [True, True])
    with pytest.raises(DatasetError, match=r"stage s0, fold \d: need at least 2 patients.*use fewer folds"):
        _plan(tmp_path / "b", [_identity(_ids("p", range(3)))] * 2, [False, True], folds=2)  # 2 of 3 left out


def test_audit_catches_the_old_independent_splits(tmp_path):
    """The pre-issue-17 scheme — one CT model on all cases, each CV stage its own case-level K-fold — on ten shared
    patients: every test patient of every fold sits in the CT model's training data, and the audit says so."""
    ids = _ids("p", range(10))
    root = RunDir(tmp_path / "old")
    runs = [root.stage(0, "ct"), root.stage(1, "cbct"), root.stage(2, "tst")]
    old = [
        StagePlan("ct", SINGLE, _identity(ids), train_val_split(ids, 0.25, SEED)),
        StagePlan("cbct", CV, _identity(ids), kfold_splits(ids, FOLDS, SEED, 0.25)),
        StagePlan("tst", CV, _identity(ids[:6]), kfold_splits(ids[:6], FOLDS, SEED, 0.25)),
    ]
    for plan, run in zip(old, runs, strict=True):
        write_plan(plan, run)
    audit = audit_chain(runs, [p.cases for p in old], root)
    for row in audit:
        ct = row["ancestors"][0]
        stage = old[1] if row["stage"] == "stage_1_cbct" else old[2]
        assert ct["model"] == "stage_0_ct" and ct["shared_patients"] == stage.splits["folds"][row["fold"]]["test"]
    assert sum(r["leaks"] for r in audit) >= 2 * FOLDS  # at least the CT model in every fold of both stages


def test_disjoint_stages_get_exactly_the_plain_kfold():
    """With one case per patient and no shared patient, every CV stage's folds are those of ``kfold_splits`` (the
    folds a plain ``medseg cv`` with the same seed draws)."""
    cbct, tst = _ids("cbct", range(10)), _ids("tst", range(6))
    fold_of = assign_patient_folds([_identity(tst), _identity(cbct)], FOLDS, SEED)
    plans = plan_chain(
        ["cbct", "tst"], [_identity(cbct), _identity(tst)], [True, True], fold_of, FOLDS, [0.25] * 2, SEED
    )
    for plan, ids in zip(plans, (cbct, tst), strict=True):
        old = kfold_splits(ids, FOLDS, SEED, 0.25)["folds"]
        assert [{k: f[k] for k in ("train", "val", "test")} for f in plan.splits["folds"]] == [
            {k: f[k] for k in ("train", "val", "test")} for f in old
        ]
