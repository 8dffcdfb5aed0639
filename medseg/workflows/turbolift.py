"""``medseg turbolift``: sequential training across a chain of tasks, fold k of stage s initialised from fold k
of stage s−1 (Haseljić, Chatterjee et al.), with baselines on the final stage and paired significance tests.

Folds are drawn per patient across the whole chain and audited for leakage before anything trains
(:mod:`medseg.workflows.turbolift_plan`); the audit is written into ``turbolift_summary.json``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from medseg.config import build
from medseg.data.datamodule import generate_dataset
from medseg.data.discovery import DatasetError, discover
from medseg.data.patients import assign_patient_folds, patient_map
from medseg.run_dir import RunDir
from medseg.workflows.cv import cross_validate
from medseg.workflows.train import train
from medseg.workflows.turbolift_plan import CV, PER_FOLD, RULE, SINGLE, StagePlan, audit_chain, plan_chain

log = logging.getLogger(__name__)
Init = Callable[[int], str | None]
BASELINES = ("scratch", "direct", "reverse")


def stage_config(cfg: DictConfig, stage: Any, run_dir: Path) -> DictConfig:
    """The run config of one stage: the stage's data keys merged over ``data``, its dotlist overrides applied."""
    scfg = copy.deepcopy(cfg)
    with open_dict(scfg):
        for key in ("stages", "baselines", "patients"):
            scfg.pop(key, None)
        scfg.data = OmegaConf.merge(scfg.data, stage.get("data") or {})
        for item in stage.get("overrides") or []:
            key, value = str(item).split("=", 1)
            OmegaConf.update(scfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, force_add=True)
        scfg.paths.output_dir = str(run_dir)
        scfg.init_from = None
    return scfg


def _best(run: RunDir) -> str:
    """The checkpoint a next stage starts from: the run's best one (its validation picked it)."""
    return str(run.usable_checkpoint("best"))


def stage_patients(cfg: DictConfig, stage: Any) -> dict[str, str]:
    """``{case: patient}`` of a stage's dataset (generated first if built in), by the ``patients`` settings
    (``regex``/``csv``; a stage's own ``patients`` entry wins over the top-level one)."""
    dm = build(stage_config(cfg, stage, Path(cfg.paths.output_dir)).data)
    generate_dataset(dm.generate, dm.root)
    ids = [c["id"] for c in discover(dm.root).cases]
    settings = {**dict(cfg.get("patients") or {}), **dict(stage.get("patients") or {})}
    return patient_map(ids, stage.name, settings.get("regex"), settings.get("csv"))


def run_stage(scfg: DictConfig, plan: StagePlan, init: Init | None) -> tuple[dict[str, Any], Init]:
    """Train one stage as planned (CV, one model, or one model per fold); returns its summary and the init
    function of the next stage (fold k → the checkpoint fold k starts from)."""
    run = RunDir(scfg.paths.output_dir)
    if plan.mode == CV:
        summary = cross_validate(scfg, init)
        keys = ("dice_mean", "dice_std", "dice_case_mean", "dice_case_std", "hd95_mean", "hd95_std", "n_cases")
        return {k: summary.get(k) for k in keys}, lambda k: _best(run.fold(k))
    if plan.mode == SINGLE:
        metrics = _train_model(scfg, run, init(0) if init else None)
        return {"val_dice": metrics["val_dice"], "init_from": metrics.get("init_from")}, lambda k: _best(run)
    dice = [_train_model(scfg, run.fold(k), init(k) if init else None)["val_dice"] for k in range(len(plan.splits))]
    excluded = {str(k): len(e) for k, e in enumerate(plan.excluded)}
    out = {"val_dice": sum(dice) / len(dice), "val_dice_folds": dice, "excluded_cases": excluded}
    return out, lambda k: _best(run.fold(k))


def _train_model(scfg: DictConfig, run: RunDir, init_from: str | None) -> dict[str, Any]:
    """One model in ``run`` (its ``splits.json`` was written by the plan), unless it already finished."""
    if run.is_finished():
        return run.read_json(run.metrics)
    mcfg = copy.deepcopy(scfg)
    with open_dict(mcfg):
        mcfg.paths.output_dir = str(run.path)
        mcfg.init_from = init_from
    return train(mcfg)


def write_plan(plan: StagePlan, run: RunDir) -> None:
    """Write a stage's planned ``splits.json`` file(s); an existing different one is refused (another plan)."""
    files = [(run, plan.splits)] if plan.mode != PER_FOLD else [(run.fold(k), s) for k, s in enumerate(plan.splits)]
    for target, splits in files:
        if target.splits.is_file():
            if target.read_json(target.splits) != splits:
                raise DatasetError(
                    f"{target.splits}: differs from the patient-aware folds of this chain (written by an older "
                    "medseg or other patients/cv settings); re-running would mix splits: use a new hydra.run.dir"
                )
            continue
        target.path.mkdir(parents=True, exist_ok=True)
        target.write_json(target.splits, splits)


def _chains(cfg: DictConfig, run: RunDir, stages: list[Any]) -> dict[str, list[tuple[Any, RunDir]]]:
    """Method → its chain of ``(stage, run dir)``: Turbolift and the enabled baselines, each ending on the final
    stage."""
    n = len(stages)
    chains = {"turbolift": [(st, run.stage(i, st.name)) for i, st in enumerate(stages)]}
    for name, enabled in (cfg.get("baselines") or {}).items():
        if not enabled:
            continue
        if name not in BASELINES:
            raise ValueError(f"baselines.{name}: unknown baseline ({', '.join(BASELINES)})")
        final = (stages[-1], run.baseline(name))
        if name == "scratch":
            chains[name] = [final]
        elif name == "direct":
            chains[name] = [chains["turbolift"][0], final]  # the same first-stage model(s) as Turbolift
        elif n < 3:
            log.warning("baselines.reverse: a 2-stage chain reversed is the chain itself; skipped")
        else:
            chain = run.baseline(name).chain
            order = range(n - 2, -1, -1)  # the earlier stages in reverse order, then the final stage
            chains[name] = [*((stages[i], chain.stage(j, stages[i].name)) for j, i in enumerate(order)), final]
    return chains


def _check(cfg: DictConfig, stages: list[Any]) -> None:
    if len(stages) < 2:
        raise ValueError(f"stages needs at least 2 entries, got {len(stages)}")
    if cfg.cv.get("splits_file"):
        raise ValueError(
            "cv.splits_file is not used by turbolift: folds are drawn per patient across the whole chain "
            "(patients.regex / patients.csv map case ids to patients; docs/turbolift.md)"
        )
    if cfg.cv.get("inner_val") is False:
        raise ValueError(
            "cv.inner_val=false is refused by turbolift: an ancestor fold would validate on the patients a later "
            "stage tests; Turbolift keeps each fold's validation inside its training part"
        )


def turbolift(cfg: DictConfig) -> dict[str, Any]:
    """Plan and audit every chain (Turbolift and baselines), train them, write ``turbolift_summary.json``."""
    run = RunDir(cfg.paths.output_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    stages = list(cfg.stages)
    _check(cfg, stages)
    n = len(stages)
    cases = {st.name: stage_patients(cfg, st) for st in stages}
    use_cv = {st.name: bool(st.get("cv", True)) or i == n - 1 for i, st in enumerate(stages)}
    cv_first = [cases[st.name] for st in reversed(stages) if use_cv[st.name]]  # the final stage's folds first
    fold_of = assign_patient_folds(cv_first, int(cfg.cv.folds), int(cfg.cv.seed))
    chains = _chains(cfg, run, stages)
    plans: dict[str, list[StagePlan]] = {}
    for method, chain in chains.items():
        if method == "direct":  # Turbolift's own first-stage model(s), then the final stage's folds
            plans[method] = [plans["turbolift"][0], plans["turbolift"][-1]]
        else:
            plans[method] = _plan(cfg, chain, cases, use_cv, fold_of)
        for plan, (_, d) in zip(plans[method], chain, strict=True):
            write_plan(plan, d)
    audit = leakage_audit(chains, cases, run)
    if not audit["clean"]:
        run.write_json(run.turbolift_summary, {"leakage_audit": audit, "error": "leakage: nothing was trained"})
        raise DatasetError(f"{run.turbolift_summary}: the leakage audit found test patients in ancestor training data")
    out = _train_chains(cfg, chains, plans)
    final_dir = chains["turbolift"][-1][1]
    methods = {m: chain[-1][1] for m, chain in chains.items()}
    out.update(
        final_stage=stages[-1].name,
        final_stage_dir=final_dir.name,
        methods=method_table(methods),
        leakage_audit=leakage_audit(chains, cases, run),
        patient_folds={p: k for p, k in sorted(fold_of.items())},
    )
    run.write_json(run.turbolift_summary, out)
    _plot_methods(methods, run.turbolift_png)
    return out


def _plan(
    cfg: DictConfig,
    chain: list[tuple[Any, RunDir]],
    cases: dict[str, dict[str, str]],
    use_cv: dict[str, bool],
    fold_of: dict[str, int],
) -> list[StagePlan]:
    names = [st.name for st, _ in chain]
    vfs = [float(stage_config(cfg, st, d.path).data.val_fraction) for st, d in chain]
    flags = [use_cv[nm] for nm in names[:-1]] + [True]
    folds, seed = int(cfg.cv.folds), int(cfg.cv.seed)
    return plan_chain(names, [cases[nm] for nm in names], flags, fold_of, folds, vfs, seed)


def _train_chains(
    cfg: DictConfig, chains: dict[str, list[tuple[Any, RunDir]]], plans: dict[str, list[StagePlan]]
) -> dict[str, Any]:
    """Train Turbolift stage by stage, then each baseline (reusing Turbolift's first stage for ``direct``)."""
    out: dict[str, Any] = {"stages": [], "baselines": {}}
    first_init: Init | None = None
    for method, chain in chains.items():
        init: Init | None = None
        for s, ((stage, d), plan) in enumerate(zip(chain, plans[method], strict=True)):
            if method == "direct" and s == 0:
                init = first_init
                continue
            log.info("%s: stage %s (%s) → %s", method, stage.name, plan.mode, d.path)
            summary, init = run_stage(stage_config(cfg, stage, d.path), plan, init)
            entry = {"name": stage.name, "dir": d.name, "mode": plan.mode, "cv": plan.mode == CV, **summary}
            if method == "turbolift":
                out["stages"].append(entry)
                first_init = first_init or init
            else:
                out["baselines"].setdefault(method, []).append(entry)
    return out


def leakage_audit(
    chains: dict[str, list[tuple[Any, RunDir]]], cases: dict[str, dict[str, str]], root: RunDir
) -> dict[str, Any]:
    """Per method, per CV stage and fold: test patients ∩ every ancestor model's train/val patients (must be
    empty), read from the ``splits.json`` files the runs train with."""
    per_method = {
        m: audit_chain([d for _, d in chain], [cases[st.name] for st, _ in chain], root) for m, chain in chains.items()
    }
    leaks = sum(f["leaks"] for rows in per_method.values() for f in rows)
    return {"rule": RULE, "clean": leaks == 0, "leaks": leaks, "chains": per_method}


def method_table(methods: dict[str, RunDir]) -> dict[str, Any]:
    """Dice mean ± std over folds and cases per method, with paired tests of every baseline against Turbolift."""
    from medseg.evaluation.stats import compare_cases

    summaries = {m: d.read_json(d.cv_summary) for m, d in methods.items()}
    per_case = {m: {r["case"]: r["dice_mean"] for r in s["per_case"]} for m, s in summaries.items()}
    table = {}
    keys = ("dice_mean", "dice_std", "dice_case_mean", "dice_case_std", "n_cases", "hd95_case_mean", "hd95_worst_case")
    for method, s in summaries.items():
        row = {k: s.get(k) for k in keys}
        if method != "turbolift":
            test = compare_cases(per_case[method], per_case["turbolift"])
            row.update(
                {k: test[k] for k in ("n", "mean_diff", "ci95", "ci_method", "wilcoxon_p", "mannwhitney_p", "notes")}
            )
            row["difference"] = "turbolift - " + method
        table[method] = row
    return table


def _plot_methods(methods: dict[str, RunDir], path: Path) -> None:
    from medseg.viz import plot_methods

    values = {}
    for m, d in methods.items():
        values[m] = [r["dice_mean"] for r in d.read_json(d.cv_summary)["per_case"] if r["dice_mean"] is not None]
    plot_methods(values, path)
