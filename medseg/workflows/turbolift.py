"""``medseg turbolift``: sequential training across a chain of tasks, fold k of stage s initialised from fold k
of stage s−1 (Haseljić, Chatterjee et al.), with baselines on the final stage and paired significance tests."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from medseg.data.io import atomic_write_json
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


def _best(run: Path) -> str:
    best = run / "checkpoints" / "best.ckpt"
    return str(best if best.is_file() else run / "checkpoints" / "last.ckpt")


def run_stage(scfg: DictConfig, use_cv: bool, init: Init | None) -> tuple[dict[str, Any], Init]:
    """Train one stage (single model or K folds); returns its summary and the init function for the next stage."""
    run_dir = Path(scfg.paths.output_dir)
    if not use_cv:
        if init is not None:
            with open_dict(scfg):
                scfg.init_from = init(0)
        metrics_path = run_dir / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else train(scfg)
        return {"val_dice": metrics["val_dice"], "init_from": metrics.get("init_from")}, lambda k: _best(run_dir)
    summary = cross_validate(scfg, init)
    keys = ("dice_mean", "dice_std", "dice_case_mean", "dice_case_std", "hd95_mean", "hd95_std", "n_cases")
    return {k: summary.get(k) for k in keys}, lambda k: _best(run_dir / f"fold_{k}")


def turbolift(cfg: DictConfig) -> dict[str, Any]:
    """Run the chain ``cfg.stages``, then the final-stage baselines; writes ``turbolift_summary.json``."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stages = list(cfg.stages)
    if len(stages) < 2:
        raise ValueError(f"stages needs at least 2 entries, got {len(stages)}")
    init: Init | None = None
    first_init: Init | None = None
    out: dict[str, Any] = {"stages": []}
    for i, stage in enumerate(stages):
        use_cv = bool(stage.get("cv", True)) or i == len(stages) - 1
        sdir = run_dir / f"stage_{i}_{stage.name}"
        log.info("stage %d/%d %s → %s (%s)", i + 1, len(stages), stage.name, sdir, "CV" if use_cv else "one model")
        summary, init = run_stage(stage_config(cfg, stage, sdir), use_cv, init)
        out["stages"].append({"name": stage.name, "dir": sdir.name, "cv": use_cv, **summary})
        first_init = first_init or init
    final = stages[-1]
    final_dir = run_dir / out["stages"][-1]["dir"]
    methods = {"turbolift": final_dir}
    for name, enabled in (cfg.get("baselines") or {}).items():
        if not enabled:
            continue
        if name not in ("scratch", "direct"):
            raise ValueError(f"baselines.{name}: unknown baseline (scratch, direct)")
        bdir = run_dir / f"baseline_{name}"
        bcfg = stage_config(cfg, final, bdir)
        with open_dict(bcfg):
            bcfg.cv.splits_file = str(final_dir / "splits.json")  # the same folds as Turbolift
        log.info("baseline %s on %s → %s", name, final.name, bdir)
        cross_validate(bcfg, first_init if name == "direct" else None)
        methods[name] = bdir
    out["final_stage"] = final.name
    out["final_stage_dir"] = final_dir.name
    out["methods"] = method_table(methods)
    atomic_write_json(run_dir / "turbolift_summary.json", out)
    plot_methods(methods, run_dir / "turbolift_methods.png")
    return out


def method_table(methods: dict[str, Path]) -> dict[str, Any]:
    """Dice mean ± std over folds and cases per method, with paired tests of every baseline against Turbolift."""
    from medseg.evaluation.stats import compare_cases

    summaries = {m: json.loads((d / "cv_summary.json").read_text()) for m, d in methods.items()}
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


def plot_methods(methods: dict[str, Path], path: Path) -> None:
    """Per-case Dice of each method on the final stage (box + points)."""
    from medseg.viz import new_figure, save_png

    values = {}
    for m, d in methods.items():
        rows = json.loads((d / "cv_summary.json").read_text())["per_case"]
        values[m] = [r["dice_mean"] for r in rows if r["dice_mean"] is not None]
    fig = new_figure(1.8 + 1.6 * len(values), 4)
    ax = fig.add_subplot()
    ax.boxplot(list(values.values()), tick_labels=list(values))
    for i, v in enumerate(values.values(), start=1):
        ax.plot([i] * len(v), v, "o", alpha=0.6)
    ax.set_ylabel("per-case Dice (final stage)")
    ax.set_ylim(0, 1)
    ax.set_title("Turbolift vs baselines")
    save_png(fig, path)
