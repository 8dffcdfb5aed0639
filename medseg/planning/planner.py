"""From a dataset fingerprint to a configuration: spacing, network topology, patch and batch within a memory budget,
and a training budget in iterations — each value an ordinary config key, each with the reason it was chosen.

The rules are nnU-Net's (``ExperimentPlanner``): the target spacing of :func:`~medseg.planning.topology.target_spacing`;
a patch that starts at 256³ voxels (2D: 2048²) with an isotropic physical aspect, clipped to the median shape, then
shrunk along the axis that is largest relative to the median shape until one training step at batch 2 fits the
memory budget; the levels of :func:`~medseg.planning.topology.pool_and_kernels` for that patch; the batch as large as
the budget allows but covering at most 5 % of the dataset's voxels, at least 2. The memory of a step is *measured*
(:mod:`medseg.planning.trial`), not estimated by a formula: a measurement predicts the next candidate (memory is
linear in the patch voxels), and the candidate is measured again.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.planning import topology as topo
from medseg.planning.trial import Trial

GiB = 2**30
MIN_BATCH = 2
DATASET_COVERED = 0.05  # a batch covers at most 5 % of the dataset's voxels (nnU-Net)


@dataclass
class PlanSettings:
    """The knobs of the planner (config group ``plan``).

    Attributes:
        memory_bytes: the budget one training step may take.
        device: ``cuda`` or ``cpu`` (where the step was measured).
        iters_per_epoch: training iterations per epoch (nnU-Net: 250).
        max_epochs: epochs (nnU-Net: 1000).
        max_channels: widest level (nnU-Net: 320 in 3D, 512 in 2D).
        min_feature_map: smallest size an axis is pooled down to (nnU-Net: 4).
        max_depth: at most this many poolings.
    """

    memory_bytes: int
    device: str = "cpu"
    iters_per_epoch: int = 250
    max_epochs: int = 1000
    max_channels: int = 320
    min_feature_map: int = 4
    max_depth: int = 6


@dataclass
class Plan:
    """What was chosen: ``values`` (config key → value), ``why`` (config key → reason), ``notes`` (warnings and
    recommendations), ``recommended_dims`` (2 or 3) and the measured ``trials``."""

    values: dict[str, Any] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    recommended_dims: int = 3
    trials: list[dict[str, Any]] = field(default_factory=list)

    def set(self, key: str, value: Any, why: str) -> None:
        self.values[key], self.why[key] = value, why


Measure = Callable[[dict[str, Any], list[int], int], Trial]  # (net config, patch, batch) → trial


def widths(base: int, depth: int, cap: int) -> list[int]:
    """Channels per level, doubling from ``base`` and capped at ``cap`` (nnU-Net's 32 → 320)."""
    return [int(min(base * 2**i, cap)) for i in range(depth + 1)]


def takes_strides(target: Any) -> bool:
    """Whether a network class takes per-level ``strides`` and ``kernel_sizes`` (anisotropic levels)."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "strides" in params and "kernel_sizes" in params


def fixed_depth(net: dict[str, Any], fixed: dict[str, Any]) -> int | None:
    """The number of poolings the plan may not change: the user's ``model.net.channels``, or a network config whose
    other keys are tied to its depth (``up_channels``, ``gated_levels``, ``level_blocks``, an input pyramid)."""
    channels = fixed.get("model.net.channels", net.get("channels"))
    tied = any(net.get(k) for k in ("up_channels", "gated_levels", "level_blocks", "input_pyramid", "pyramid_levels"))
    if channels and ("model.net.channels" in fixed or tied):
        return len(channels) - 1
    return None


def make_plan(
    fingerprint: dict[str, Any],
    net: dict[str, Any],
    net_class: Any,
    fixed: dict[str, Any],
    settings: PlanSettings,
    measure: Measure,
) -> Plan:
    """Plan a configuration for ``net`` (the composed ``model.net`` as plain data; ``net_class`` its class).

    Args:
        fingerprint: :func:`~medseg.planning.fingerprint.dataset_fingerprint`.
        net: the network config.
        net_class: the network class (does it take ``strides``?).
        fixed: config keys the user set (command line, ``plan.keep``) → their values; the plan works around them.
        settings: budget and limits.
        measure: runs a trial (memory of one step).
    """
    plan = Plan()
    spacings = np.asarray(fingerprint["spacings"], float)
    crops = np.asarray(fingerprint["shapes_after_crop"], float)
    if fixed.get("data.spacing") is not None:
        spacing = [float(s) for s in fixed["data.spacing"]]
    else:
        spacing, why = topo.target_spacing(spacings, crops)
        plan.set("data.spacing", [round(s, 4) for s in spacing], why)
    shape = topo.median_shape(spacings, crops, spacing)
    dims = int(net.get("spatial_dims") or 3)
    planner = _Planner(plan, net, net_class, fixed, settings, measure, dims)
    planner.run(spacing[:dims], shape[:dims], n_voxels=float(np.prod(shape)) * len(spacings))
    _recommend(plan, spacing, shape, settings.min_feature_map)
    plan.set("data.iters_per_epoch", settings.iters_per_epoch, "training iterations per epoch (nnU-Net: 250)")
    plan.set("trainer.max_epochs", settings.max_epochs, "epochs (nnU-Net: 1000); the poly LR schedule spans them")
    return plan


class _Planner:
    """Patch, topology and batch for one network (2D or 3D)."""

    def __init__(
        self,
        plan: Plan,
        net: dict[str, Any],
        net_class: Any,
        fixed: dict[str, Any],
        settings: PlanSettings,
        measure: Measure,
        dims: int,
    ) -> None:
        self.plan, self.net, self.fixed, self.settings, self.measure, self.dims = (
            plan, net, fixed, settings, measure, dims,
        )  # fmt: skip
        self.anisotropic_ok = takes_strides(net_class) and not net.get("input_pyramid")  # a pyramid halves all axes
        self.divisor_of = getattr(net_class, "patch_divisor", None)
        self.depth = fixed_depth(net, fixed)
        if fixed.get("model.net.strides") is not None:
            self.depth = len(fixed["model.net.strides"])
        self.patch_key = "data.patch_size" if dims == 3 else "data.patch_size_2d"
        channels = fixed.get("model.net.channels") or net.get("channels") or [16]
        self.base = int(channels[0])
        self.cap = settings.max_channels if dims == 3 else max(settings.max_channels, 512)

    def candidate(
        self, spacing: list[float], patch: list[int], exact: bool = False
    ) -> tuple[dict[str, Any], list[int], topo.Topology]:
        """The network config and rounded patch for ``patch`` (``exact``: levels that divide ``patch`` as it is)."""
        levels = topo.pool_and_kernels(
            spacing, patch, self.settings.min_feature_map, self.settings.max_depth, self.depth, exact
        )
        net = dict(self.net)
        fixed_channels = self.fixed.get("model.net.channels")
        if fixed_channels is not None:
            net["channels"] = list(fixed_channels)
        elif self.depth is None and net.get("channels") is not None:
            net["channels"] = widths(self.base, levels.depth, self.cap)
        if self.anisotropic_ok:
            net["strides"] = self.fixed.get("model.net.strides", levels.strides)
            net["kernel_sizes"] = self.fixed.get("model.net.kernel_sizes", levels.kernels)
        divisor = levels.divisor if self.anisotropic_ok else [1] * self.dims
        if self.divisor_of is not None:
            divisor = [int(np.lcm(a, b)) for a, b in zip(divisor, self.divisor_of(net), strict=True)]
        return net, topo.round_patch(patch, divisor), levels

    def fits(self, net: dict[str, Any], patch: list[int], batch: int) -> Trial:
        try:
            trial = self.measure(net, patch, batch)
        except RuntimeError as err:  # a candidate the network cannot run: one line, not a traceback
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(
                f"plan: {net.get('_target_')} cannot train on a patch of {patch} voxels with these levels "
                f"(strides {net.get('strides')}): {first}; set data.patch_size or raise plan.memory_gb"
            ) from err
        self.plan.trials.append({"patch": patch, "batch": batch, "bytes": trial.bytes, "how": trial.how})
        return trial

    def run(self, spacing: list[float], shape: list[float], n_voxels: float) -> None:
        budget = self.settings.memory_bytes
        if self.patch_key in self.fixed:
            patch = [int(p) for p in self.fixed[self.patch_key]]
            net, _, levels = self.candidate(spacing, patch, exact=True)  # your patch as it is
            trial = self.fits(net, patch, MIN_BATCH)
            why_patch = ""  # yours: not planned
        else:
            start = 256**3 if self.dims == 3 else 2048**2
            patch = topo.initial_patch(spacing, shape, start)
            net, patch, levels = self.candidate(spacing, patch)
            trial = self.fits(net, patch, MIN_BATCH)
            while trial.bytes > budget and max(patch) > min(levels.divisor):
                smaller = self._shrink(patch, shape, spacing, trial, budget)
                if smaller == patch:  # no axis can shrink further: the notes say it does not fit
                    break
                net, patch, levels = self.candidate(spacing, smaller)
                trial = self.fits(net, patch, MIN_BATCH)
            why_patch = (
                f"largest patch (from {'256^3' if self.dims == 3 else '2048^2'} voxels, isotropic in mm, clipped to "
                f"the median shape "
                f"{[round(s) for s in shape]}) whose step at batch 2 fits {budget / GiB:.1f} GiB: "
                f"{trial.bytes / GiB:.2f} GiB measured ({trial.how})"
            )
        if trial.bytes > budget:
            self.plan.notes.append(
                f"even {self.patch_key}={patch} at batch 2 takes {trial.bytes / 2**20:.0f} MiB > the budget "
                f"{budget / 2**20:.0f} MiB (plan.memory_gb)"
            )
        if why_patch:
            self.plan.set(self.patch_key, patch, why_patch)
        self._topology(net, levels, spacing)
        self._batch(net, patch, trial, budget, n_voxels)

    def _shrink(
        self, patch: list[int], shape: list[float], spacing: list[float], trial: Trial, budget: int
    ) -> list[int]:
        """Shrink like nnU-Net (one divisor step of the axis largest relative to the median shape) until the
        memory predicted from ``trial`` (linear in the voxels) fits, at least one step."""
        fixed_part = trial.bytes - trial.activations
        per_voxel = trial.activations / math.prod(patch)
        new = list(patch)
        while True:
            _, rounded, levels = self.candidate(spacing, new)
            steps = [max(d, 1) if self.anisotropic_ok else 2 ** max(levels.depth, 1) for d in levels.divisor]
            # an axis keeps at least 2 x min_feature_map voxels (or its median size, when smaller)
            floor = 2 * self.settings.min_feature_map
            least = [max(steps[a], min(floor, math.ceil(shape[a]))) for a in range(len(new))]
            movable = [a for a in range(len(rounded)) if rounded[a] - steps[a] >= least[a]]
            # nnU-Net's choice (largest patch / median shape) among the axes that can shrink and still leave a
            # network with at least one pooling level
            for axis in sorted(movable, key=lambda a: rounded[a] / max(shape[a], 1.0), reverse=True):
                smaller = list(rounded)
                smaller[axis] = rounded[axis] - steps[axis]
                if self.candidate(spacing, smaller)[2].depth >= 1:
                    break
            else:  # the smallest patch these levels take
                return new
            new = smaller
            if fixed_part + per_voxel * math.prod(new) <= budget or max(new) <= min(levels.divisor):
                return new

    def _topology(self, net: dict[str, Any], levels: topo.Topology, spacing: list[float]) -> None:
        if net.get("channels") is not None and "model.net.channels" not in self.fixed and self.depth is None:
            self.plan.set(
                "model.net.channels",
                net["channels"],
                f"{levels.depth + 1} levels: pool while an axis stays >= {2 * self.settings.min_feature_map} voxels; "
                f"widths double from model.net.channels[0]={self.base}, at most {self.cap}",
            )
        aniso = any(len(set(s)) > 1 for s in levels.strides) or any(len(set(k)) > 1 for k in levels.kernels)
        if self.anisotropic_ok:
            for key, value in (("model.net.strides", levels.strides), ("model.net.kernel_sizes", levels.kernels)):
                if key not in self.fixed:
                    self.plan.set(key, value, _topology_why(key, spacing, levels, self.settings.min_feature_map))
        elif aniso:
            pyramid = bool(self.net.get("input_pyramid"))
            what = "its input pyramid halves every axis" if pyramid else "it takes no per-level strides/kernel_sizes"
            self.plan.notes.append(
                f"{net.get('_target_')}: {what}, so it pools every axis although the spacing "
                f"{[round(x, 3) for x in spacing]} asks for in-plane levels {levels.strides}; model/net=unet (or "
                "~model/net/input_pyramid) plans them"
            )

    def _batch(self, net: dict[str, Any], patch: list[int], trial: Trial, budget: int, n_voxels: float) -> None:
        if "data.batch_size" in self.fixed:
            return
        per_sample = trial.activations / MIN_BATCH
        static = trial.bytes - trial.activations
        by_memory = int((budget - static) // per_sample) if per_sample > 0 else MIN_BATCH
        by_data = max(1, round(n_voxels * DATASET_COVERED / math.prod(patch)))
        batch = max(min(by_memory, by_data), MIN_BATCH)
        if batch > MIN_BATCH:
            check = self.fits(net, patch, batch)
            while check.bytes > budget and batch > MIN_BATCH:
                batch -= 1
                check = self.fits(net, patch, batch)
        limit = "memory" if by_memory <= by_data else "5 % of the dataset's voxels"
        self.plan.set(
            "data.batch_size",
            batch,
            f"limited by {limit} (memory allows {by_memory}, 5 % of the voxels {by_data}; at least {MIN_BATCH})",
        )


def _topology_why(key: str, spacing: list[float], levels: topo.Topology, min_feature_map: int) -> str:
    spacing_text = [round(s, 3) for s in spacing]
    if key.endswith("strides"):
        return (
            f"spacing {spacing_text}: each level pools (x2) the axes within 2x of the finest spacing that stay >= "
            f"{2 * min_feature_map} voxels; a coarser axis waits until it is within 2x"
        )
    if any(k == 1 for level in levels.kernels for k in level):
        return "1 along an axis still more than 2x coarser than the finest (in-plane kernels), 3 once within 2x"
    return "3 on every axis (every spacing within 2x of the finest)"


def _recommend(plan: Plan, spacing: list[float], shape: list[float], min_feature_map: int) -> None:
    ratio = topo.anisotropy(spacing)
    coarse = int(np.argmax(spacing))
    if ratio <= topo.ANISOTROPY:
        plan.recommended_dims = 3
        plan.notes.append(f"3D: the spacing is isotropic enough (coarsest / finest {ratio:.1f} <= 3)")
        return
    slices = shape[coarse]
    plan.recommended_dims = 2 if slices < 2 * min_feature_map else 3
    plan.notes.append(
        f"strongly anisotropic data (coarsest / finest spacing {ratio:.1f} > 3, {slices:.0f} slices along "
        f"{'xyz'[coarse]}): {'2D is recommended' if plan.recommended_dims == 2 else '3D with in-plane levels'}; "
        "nnU-Net trains both 2D and 3D for such data: compare `model.net.spatial_dims=2` with `medseg compare`"
    )
