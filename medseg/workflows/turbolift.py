"""``medseg turbolift``: sequential training across a chain of tasks, fold k of stage s initialised from fold k
of stage s−1 (Haseljić, Chatterjee et al.), with baselines on the final stage and paired significance tests."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from medseg.run_dir import RunDir
from medseg.workflows.cv import cross_validate
from medseg.workflows.train import train

log = logging.getLogger(__name__)
Init = Callable[[int], str | None]


def stage_config(cfg: DictConfig, stage: Any, run_dir: Path) -> DictConfig:
    """The run config of one stage: the stage's data keys merged over ``data``, its dotlist overrides applied."""
    scfg = copy.deepcopy(cfg)
    with open_dict(scfg):
        for key in ("stages", "baselines"):
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


def run_stage(scfg: DictConfig, use_cv: bool, init: Init | None) -> tuple[dict[str, Any], Init]:
    """Train one stage (single model or K folds); returns its summary and the init function for the next stage."""
    run = RunDir(scfg.paths.output_dir)
    if not use_cv:
        if init is not None:
            with open_dict(scfg):
                scfg.init_from = init(0)
        metrics = run.read_json(run.metrics) if run.is_finished() else train(scfg)
        return {"val_dice": metrics["val_dice"], "init_from": metrics.get("init_from")}, lambda k: _best(run)
    summary = cross_validate(scfg, init)
    keys = ("dice_mean", "dice_std", "dice_case_mean", "dice_case_std", "hd95_mean", "hd95_std", "n_cases")
    return {k: summary.get(k) for k in keys}, lambda k: _best(run.fold(k))


def turbolift(cfg: DictConfig) -> dict[str, Any]:
    """Run the chain ``cfg.stages``, then the final-stage baselines; writes ``turbolift_summary.json``."""
    run = RunDir(cfg.paths.output_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    stages = list(cfg.stages)
    if len(stages) < 2:
        raise ValueError(f"stages needs at least 2 entries, got {len(stages)}")
    init: Init | None = None
    first_init: Init | None = None
    out: dict[str, Any] = {"stages": []}
    for i, stage in enumerate(stages):
        use_cv = bool(stage.get("cv", True)) or i == len(stages) - 1
        sdir = run.stage(i, stage.name)
        log.info("stage %d/%d %s → %s (%s)", i + 1, len(stages), stage.name, sdir.path, "CV" if use_cv else "one model")
        summary, init = run_stage(stage_config(cfg, stage, sdir.path), use_cv, init)
        out["stages"].append({"name": stage.name, "dir": sdir.name, "cv": use_cv, **summary})
        first_init = first_init or init
    final = stages[-1]
    final_dir = run.child(out["stages"][-1]["dir"])
    methods = {"turbolift": final_dir}
    for name, enabled in (cfg.get("baselines") or {}).items():
        if not enabled:
            continue
        if name not in ("scratch", "direct"):
            raise ValueError(f"baselines.{name}: unknown baseline (scratch, direct)")
        bdir = run.baseline(name)
        bcfg = stage_config(cfg, final, bdir.path)
        with open_dict(bcfg):
            bcfg.cv.splits_file = str(final_dir.splits)  # the same folds as Turbolift
        log.info("baseline %s on %s → %s", name, final.name, bdir.path)
        cross_validate(bcfg, first_init if name == "direct" else None)
        methods[name] = bdir
    out["final_stage"] = final.name
    out["final_stage_dir"] = final_dir.name
    out["methods"] = method_table(methods)
    run.write_json(run.turbolift_summary, out)
    _plot_methods(methods, run.turbolift_png)
    return out


def method_table(methods: dict[str, RunDir]) -> dict[str, Any]:
    """Dice mean ± std over folds and cases per method, with paired tests of every baseline against Turbolift."""
    from medseg.evaluation.stats import compare_cases

    summaries = {m: d.read_json(d.cv_summary) for m, d in methods.items()}
    per_case = {m: {r["case"]: r["dice_mean"] for r in s["per_case"]} for m, s in summaries.items()}
    table = {}
    for method, s in summaries.items():
        row = {k: s.get(k) for k in ("dice_mean", "dice_std", "dice_case_mean", "dice_case_std", "n_cases")}
        if method != "turbolift":
            test = compare_cases(per_case[method], per_case["turbolift"])
            row.update({k: test[k] for k in ("mean_diff", "ci95", "wilcoxon_p", "mannwhitney_p")})
            row["difference"] = "turbolift - " + method
        table[method] = row
    return table


def _plot_methods(methods: dict[str, RunDir], path: Path) -> None:
    from medseg.viz import plot_methods

    values = {}
    for m, d in methods.items():
        values[m] = [r["dice_mean"] for r in d.read_json(d.cv_summary)["per_case"] if r["dice_mean"] is not None]
    plot_methods(values, path)
