"""Planning inside ``medseg train`` and ``medseg cv``: the keys a plan may set, where a plan comes from, plan.yaml.

Every planned value is an ordinary config key (:data:`PLANNED_KEYS`). The plan never changes a key you set: the
``key=value`` overrides of the command line (and of :func:`medseg.config.compose_config`) are recorded in
``plan.keep``, and you may list more there (an experiment file can). A plan comes from, in this order:
``plan.file`` (e.g. an edited ``plan.yaml``), the run directory's ``plan.yaml`` (a re-run or resumed run keeps its
plan; edit it to change the next run), or planning now (written to the run directory).
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from medseg.fileio import atomic_write_bytes
from medseg.planning.fingerprint import dataset_fingerprint
from medseg.planning.planner import GiB, Plan, PlanSettings, make_plan
from medseg.planning.trial import measure, time_cpu_step
from medseg.run_dir import RunDir

log = logging.getLogger(__name__)
PLANNED_KEYS = (
    "data.spacing",
    "data.patch_size",
    "data.patch_size_2d",
    "data.batch_size",
    "data.iters_per_epoch",
    "model.net.channels",
    "model.net.strides",
    "model.net.kernel_sizes",
    "trainer.max_epochs",
)
PLANNED_COMMANDS = ("train", "cv", "plan")
CPU_MEMORY_GB = 1.0  # the CPU step budget: on a CPU time, not memory, limits (docs/planning.md)
CPU_HOURS = 4.0  # training on the CPU: epochs that fit this many hours of steps, unless plan.hours says otherwise


def enabled(cfg: DictConfig) -> bool:
    """``plan.enabled``: true, false, or ``auto`` = train/cv runs on a dataset of your own (``data.generate`` null:
    the built-in demo datasets keep their fixed, fast recipes)."""
    setting = OmegaConf.select(cfg, "plan.enabled", default=False)
    if isinstance(setting, str) and setting.lower() == "auto":
        task = OmegaConf.select(cfg, "task_name", default="train")
        return task in PLANNED_COMMANDS and OmegaConf.select(cfg, "data.generate", default=None) is None
    return bool(setting)


def training_device(cfg: DictConfig) -> str:
    """``cuda`` when the trainer will run on a CUDA GPU, else ``cpu``."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    return "cuda" if torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda") else "cpu"


def settings(cfg: DictConfig, device: str) -> PlanSettings:
    """The planner's settings from ``plan.*``; the memory budget is ``plan.memory_gb``, else 90 % of the GPU's memory
    (training on CUDA) or ``CPU_MEMORY_GB`` (training on the CPU)."""
    gb = OmegaConf.select(cfg, "plan.memory_gb", default=None)
    if gb is None:
        gb = 0.9 * torch.cuda.get_device_properties(0).total_memory / GiB if device == "cuda" else CPU_MEMORY_GB
    node: Any = OmegaConf.select(cfg, "plan") or {}
    if node.get("hours") is not None:
        _positive("plan.hours", node.get("hours"), float)
    return PlanSettings(
        memory_bytes=int(_positive("plan.memory_gb", gb, float) * GiB),
        device=device,
        iters_per_epoch=_positive("plan.iters_per_epoch", node.get("iters_per_epoch", 250), int),
        max_epochs=_positive("plan.max_epochs", node.get("max_epochs", 1000), int),
        max_channels=_positive("plan.max_channels", node.get("max_channels", 320), int),
        min_feature_map=_positive("plan.min_feature_map", node.get("min_feature_map", 4), int),
        max_depth=_positive("plan.max_depth", node.get("max_depth", 6), int),
    )


def _positive(key: str, value: Any, kind: type) -> Any:
    """``value`` as a positive ``kind`` (int or float), or one ValueError naming ``key``."""
    try:
        number = kind(value) if not isinstance(value, bool) and value is not None else None
    except (TypeError, ValueError):
        number = None
    if number is None or not number > 0 or (kind is int and number != float(value)):
        raise ValueError(f"{key}={value!r}: must be a positive {'integer' if kind is int else 'number'}")
    return number


def fixed_values(cfg: DictConfig) -> dict[str, Any]:
    """Planned keys the plan may not change (``plan.keep``) → their values."""
    keep = {str(k) for k in (OmegaConf.select(cfg, "plan.keep") or [])}
    out = {}
    for key in PLANNED_KEYS:
        if key in keep:
            value = OmegaConf.select(cfg, key, default=None)
            out[key] = OmegaConf.to_container(value) if isinstance(value, (DictConfig, list)) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def compute_plan(cfg: DictConfig, time_step: bool | None = None) -> tuple[Plan, dict[str, Any]]:
    """Fingerprint ``data.root`` and plan for ``cfg``'s network; returns ``(plan, fingerprint)``."""
    from hydra._internal.utils import _locate

    from medseg.data.datamodule import cache_mode, checked_dataset, default_cache_dir

    cache = OmegaConf.select(cfg, "data.cache_dir", default=None)
    cache_dir = Path(cache).expanduser() if cache else default_cache_dir()
    # checked as training checks it: nothing is planned from a case that training would refuse (NaN voxels, labels
    # that are not classes, mismatched geometry...), and the classes are the labels' classes (0/255 declared: 2)
    device = training_device(cfg)
    plan_settings = settings(cfg, device)  # plan.* checked before any case is read
    mode = cache_mode(OmegaConf.select(cfg, "data.cache", default="disk"))
    spec, _, label_values = checked_dataset(str(cfg.data.root), mode, cache_dir)
    fingerprint = dataset_fingerprint(spec, cache_dir)
    in_channels = len(fingerprint["channels"])
    classes = len(label_values)
    net = _plain(cfg.model.net)
    precision = OmegaConf.select(cfg, "trainer.precision", default=None)

    def run_trial(net_cfg: dict[str, Any], patch: list[int], batch: int) -> Any:
        return measure(net_cfg, in_channels, classes, patch, batch, device, precision, cache_dir)

    plan = make_plan(fingerprint, net, _locate(net["_target_"]), fixed_values(cfg), plan_settings, run_trial)
    do_time = OmegaConf.select(cfg, "plan.time_step", default=True) if time_step is None else time_step
    seconds = _step_seconds(plan, cfg, net, in_channels, classes, device, run_trial) if do_time else None
    _budget(plan, cfg, device, seconds)
    return plan, fingerprint


def _step_seconds(
    plan: Plan, cfg: DictConfig, net: dict[str, Any], in_ch: int, classes: int, device: str, run_trial: Any
) -> float | None:
    """Seconds of one real training step with the values training will use (planned, or yours)."""
    merged = copy.deepcopy(cfg)
    apply(merged, plan)
    planned: dict[str, Any] = {
        k: _plain(merged.model.net[k]) for k in ("channels", "strides", "kernel_sizes") if k in net
    }
    net_cfg = {**net, **planned}
    dims = int(net.get("spatial_dims") or 3)
    patch = _plain(merged.data.patch_size if dims == 3 else merged.data.patch_size_2d)
    batch = int(merged.data.batch_size)
    if device == "cuda":
        return run_trial(net_cfg, patch, batch).seconds
    return time_cpu_step(net_cfg, in_ch, classes, patch, batch)


def _budget(plan: Plan, cfg: DictConfig, device: str, seconds: float | None) -> None:
    """The epochs: ``plan.hours`` of steps at the measured step time when set (null: nnU-Net's ``plan.max_epochs``
    on CUDA, ``CPU_HOURS`` on the CPU); the note gives the time the budget takes."""
    hours = OmegaConf.select(cfg, "plan.hours", default=None)
    if hours is not None:
        hours = _positive("plan.hours", hours, float)
    if hours is None and device == "cpu":
        hours = CPU_HOURS
    iters = int(plan.values.get("data.iters_per_epoch") or 0)
    keep = {str(k) for k in (OmegaConf.select(cfg, "plan.keep") or [])}
    if "data.iters_per_epoch" in keep:
        iters = int(OmegaConf.select(cfg, "data.iters_per_epoch", default=0) or 0)
    if hours is not None and seconds and iters:
        epochs = max(1, int(float(hours) * 3600 / (iters * seconds)))
        plan.set(
            "trainer.max_epochs",
            epochs,
            f"{float(hours):g} h of steps (plan.hours) at {seconds:.2f} s per step (measured on {device}) and "
            f"{iters} iterations per epoch; nnU-Net's 1000 epochs would take {1000 * iters * seconds / 3600:.0f} h",
        )
    elif seconds and iters:
        total = iters * int(plan.values.get("trainer.max_epochs", 0)) * seconds / 3600
        plan.notes.append(f"one training step took {seconds:.2f} s on {device}: the budget is ~{total:.1f} h of steps")


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``{"data.spacing": v}`` → ``{"data": {"spacing": v}}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`nested` (leaves are anything but mappings)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def plan_yaml(plan: Plan, fingerprint: dict[str, Any] | None, root: str) -> str:
    """``plan.yaml``: the values as a config overlay (edit them), then the reasons, notes and measurements."""
    doc = {
        "config": nested(plan.values),
        "why": dict(plan.why),
        "notes": list(plan.notes),
        "recommended_spatial_dims": plan.recommended_dims,
        "trials": list(plan.trials),
    }
    if fingerprint is not None:
        doc["fingerprint"] = {k: v for k, v in fingerprint.items() if k not in ("spacings", "shapes_after_crop")}
    when = datetime.datetime.now().isoformat(timespec="seconds")
    header = (
        f"# medseg plan of data.root={root} ({when}).\n"
        "# `config` holds ordinary config keys. Edit a value and re-run in this run directory, or train with\n"
        "# plan.file=THIS_FILE: the file wins over planning, and a key=value on the command line wins over the file.\n"
    )
    body = yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=118, allow_unicode=True)
    return header + body  # lists of numbers on one line: [0.7, 0.7, 2.785]


def write_plan(path: str | Path, plan: Plan, fingerprint: dict[str, Any] | None, root: str) -> None:
    """Write :func:`plan_yaml` to ``path`` (UTF-8, whole or not at all)."""
    atomic_write_bytes(path, plan_yaml(plan, fingerprint, root).encode("utf-8"))


class _NoAliases(yaml.SafeDumper):
    """Plain YAML: a value written twice is written out twice, never as an anchor (read_plan refuses anchors)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def read_plan(path: str | Path) -> Plan:
    """A ``plan.yaml`` back as a :class:`Plan` (its ``config`` values; read as data, no tags, no interpolation)."""
    from medseg.safe_config import load_yaml

    doc = OmegaConf.to_container(load_yaml(path), resolve=False)
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ValueError(f"{path}: not a medseg plan (no 'config' mapping)")
    values = {k: v for k, v in flat(doc["config"]).items() if k in PLANNED_KEYS}
    unknown = sorted(set(flat(doc["config"])) - set(PLANNED_KEYS))
    if unknown:
        raise ValueError(f"{path}: keys a plan cannot set: {unknown} (plannable: {', '.join(PLANNED_KEYS)})")
    bad = sorted(k for k, v in values.items() if not _numbers(v))
    if bad:
        raise ValueError(f"{path}: {', '.join(bad)}: a plan value must be a number or a list of numbers (or null)")
    why = {str(k): str(v) for k, v in (doc.get("why") or {}).items()}
    notes = [str(n) for n in doc.get("notes") or []]
    return Plan(values=values, why=why, notes=notes, recommended_dims=int(doc.get("recommended_spatial_dims") or 3))


def _numbers(value: Any) -> bool:
    """A plan value: a number, null, or (nested) lists of numbers — never a string (no interpolation reaches cfg)."""
    if isinstance(value, list):
        return all(_numbers(v) for v in value)
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def apply(cfg: DictConfig, plan: Plan) -> dict[str, str]:
    """Set the plan's values in ``cfg``, except the keys in ``plan.keep``; returns ``{key: "planned" | "kept"}``."""
    keep = {str(k) for k in (OmegaConf.select(cfg, "plan.keep") or [])}
    status = {}
    with open_dict(cfg):
        for key, value in plan.values.items():
            if key in keep:
                status[key] = "kept"
                continue
            OmegaConf.update(cfg, key, value, merge=False)
            status[key] = "planned"
    return status


def plan_run(cfg: DictConfig, run: RunDir | None) -> Plan | None:
    """Plan ``cfg`` for a train or CV run in ``run`` when planning is enabled; None otherwise.

    The plan comes from ``plan.file``, else ``run``'s ``plan.yaml``, else is computed and written to ``run``; its
    values are applied to ``cfg`` (not the keys in ``plan.keep``), and ``plan.enabled`` set false (CV folds and
    resumed runs use the values, not a new plan).
    """
    if not enabled(cfg):
        return None
    source = OmegaConf.select(cfg, "plan.file", default=None)
    fingerprint = None
    if source:
        plan = read_plan(Path(str(source)).expanduser())
    elif run is not None and run.plan.is_file() and not _stale(read_plan(run.plan), cfg, run):
        plan = read_plan(run.plan)
        source = str(run.plan)
    else:
        plan, fingerprint = compute_plan(cfg)
    status = apply(cfg, plan)
    used = as_used(cfg, plan)
    if run is not None and (fingerprint is not None or not run.plan.is_file()):
        write_plan(run.plan, used, fingerprint, str(cfg.data.root))
    with open_dict(cfg):
        cfg.plan.enabled = False
    for key, value in plan.values.items():
        log.info("plan: %s=%s (%s; %s)", key, value, status[key], plan.why.get(key, source or ""))
    for note in plan.notes:
        log.info("plan: %s", note)
    return plan


def _stale(plan: Plan, cfg: DictConfig, run: RunDir) -> bool:
    """Whether a run directory's plan was made around other values of your keys than this command sets (e.g. a
    failed first attempt with another ``data.spacing``), while nothing has trained on it yet: then it is made again.
    Once a model trained, the plan stays (a changed configuration is refused when the run resumes)."""
    started = run.state is not None or any(fold.state is not None for _, fold in run.folds())
    if started:
        return False
    yours = {k: v for k, v in plan.values.items() if plan.why.get(k, "").startswith("set by you")}
    return _numeric(yours) != _numeric(fixed_values(cfg))


def _numeric(value: Any) -> Any:
    """Numbers as floats, recursively (a plan file's 2 and a command line's 2.0 are the same value)."""
    if isinstance(value, dict):
        return {k: _numeric(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numeric(v) for v in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def as_used(cfg: DictConfig, plan: Plan) -> Plan:
    """The plan as the run uses it: your value for every planned key you set (``why``: set by you, and what the plan
    chose), so that ``plan.file=`` of a run's ``plan.yaml`` reproduces that run's configuration."""
    keep = {str(k) for k in (OmegaConf.select(cfg, "plan.keep") or [])}
    values, why = dict(plan.values), dict(plan.why)
    for key in PLANNED_KEYS:
        if key in keep:
            values[key] = _plain(OmegaConf.select(cfg, key, default=None))
            planned = f" (the plan: {json.dumps(plan.values[key])})" if key in plan.values else ""
            why[key] = "set by you" + planned
    return Plan(values, why, list(plan.notes), plan.recommended_dims, list(plan.trials))
