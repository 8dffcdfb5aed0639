"""``medseg plan data.root=PATH [key=value ...] [-o PLAN.yaml] [--json]``: fingerprint a dataset and print the
configuration ``medseg train data=nifti`` would use on it, with the reason for every value."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.table import Table
from rich.text import Text

from medseg.cli._output import describe, fail, guarded, out

SUMMARY = "plan a configuration for a dataset"
USAGE = "medseg plan data.root=PATH [key=value ...] [-o PLAN.yaml] [--json]"
EPILOG = """examples:
  medseg plan data.root=/data/Task05_Prostate
  medseg plan data.root=/data/Task05_Prostate model/net=unet trainer=gpu -o my_plan.yaml
  medseg train data=nifti data.root=/data/Task05_Prostate plan.file=my_plan.yaml
Any key=value you add is kept as you set it, and the plan works around it (docs/planning.md)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="medseg plan",
        description="Fingerprint a dataset (spacings, shapes, intensities, classes) and plan its configuration: "
        "target spacing, network levels (pooling and kernels per axis), patch and batch within the memory budget "
        "(measured by trial steps), training iterations. `medseg train data=nifti` does the same automatically.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="data.root=PATH and any config override")
    p.add_argument("-o", "--output", metavar="PLAN.yaml", help="write the plan (train with plan.file=PLAN.yaml)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    return p


def print_plan(plan: Any, cfg: Any, where: str | None = None) -> None:
    """The plan as a table (key, value in ``cfg``, why) followed by its notes; keys in ``plan.keep`` show your value."""
    from omegaconf import OmegaConf

    from medseg.planning.auto import PLANNED_KEYS

    keep = [str(k) for k in (OmegaConf.select(cfg, "plan.keep") or [])]
    table = Table(title=Text(f"medseg plan: data.root={cfg.data.root}"), show_lines=False)
    for column in ("key", "value", "why"):
        table.add_column(column, overflow="fold")
    for key in PLANNED_KEYS:
        kept = key in keep
        if key not in plan.values and not kept:
            continue
        value = OmegaConf.select(cfg, key, default=None) if kept else plan.values[key]
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        why = (
            plan.why.get(key, "")
            if not kept
            else "set by you" + (f" (the plan: {_short(plan.values[key])})" if key in plan.values else "")
        )
        table.add_row(Text(key), Text(_short(value)), Text(why))
    out.print(table)
    for note in plan.notes:
        out.print(Text(f"- {note}"))
    if where is not None:
        out.print(Text(where))


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _fingerprint_table(fp: dict[str, Any]) -> None:
    table = Table(title=Text(f"fingerprint: {fp['cases']} cases ({fp['layout']} layout)"))
    for column in ("what", "value"):
        table.add_column(column, overflow="fold")
    table.add_row("median spacing (mm, RAS)", _short(fp["median_spacing"]))
    table.add_row("median shape after crop (voxels)", _short(fp["median_shape_after_crop"]))
    for c in fp["channels"]:
        stats = ", ".join(f"{k} {c[k]:.4g}" for k in ("p00_5", "p50", "p99_5", "mean", "std") if k in c)
        table.add_row(f"channel {c['name']} ({c['normalisation']})", f"foreground {stats}")
    for value, c in fp["classes"].items():
        table.add_row(f"class {value} {c['name']}", f"{100 * c['fraction']:.3g} % of voxels, in {c['cases']} cases")
    out.print(table)


def run(args: list[str]) -> int:
    """The ``medseg plan`` command; returns the exit code."""
    from medseg.config import compose_config
    from medseg.planning.auto import compute_plan, write_plan

    ns = parser().parse_args(args)
    overrides = list(ns.overrides)
    if not any(o.split("=", 1)[0].lstrip("+") == "data.root" for o in overrides):
        return fail("plan", "data.root=PATH is required")
    if not any(o.startswith("data=") for o in overrides):
        overrides.insert(0, "data=nifti")
    try:
        cfg = compose_config("train", overrides)
    except Exception as error:  # noqa: BLE001 - Hydra's composition errors name the override
        return fail("plan", " ".join(str(error).split()))
    plan, fingerprint = guarded("plan", lambda: compute_plan(cfg))
    if ns.output:
        try:
            write_plan(ns.output, plan, fingerprint, str(cfg.data.root))
        except OSError as error:
            return fail("plan", describe(error))
    if ns.json:
        doc = {"values": plan.values, "why": plan.why, "notes": plan.notes, "fingerprint": fingerprint}
        sys.stdout.write(json.dumps({**doc, "recommended_spatial_dims": plan.recommended_dims}, indent=2) + "\n")
        return 0
    _fingerprint_table(fingerprint)
    where = f"plan written to {ns.output}: train with plan.file={ns.output} (edit values there first)"
    print_plan(plan, cfg, where=where if ns.output else None)
    return 0
