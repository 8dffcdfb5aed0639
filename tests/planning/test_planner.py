"""The planner with a fake memory probe (memory = static + bytes per voxel × voxels × batch): patch, levels, batch."""

from __future__ import annotations

import math

import pytest

from medseg.nets import UNet
from medseg.nets.mk_unet import MKUNet
from medseg.planning.planner import GiB, PlanSettings, make_plan
from medseg.planning.trial import Trial

NET = {"_target_": "medseg.nets.UNet", "spatial_dims": 3, "channels": [16, 32, 64, 128]}


def fingerprint(spacing: list[float], shape: list[int], cases: int = 10) -> dict:
    return {"spacings": [spacing] * cases, "shapes_after_crop": [shape] * cases}


def fake_measure(per_voxel: float = 1000.0, static: float = 1e7):
    calls = []

    def measure(net: dict, patch: list[int], batch: int) -> Trial:
        act = per_voxel * math.prod(patch) * batch
        calls.append((net, list(patch), batch))
        return Trial(bytes=int(static + act), activations=int(act), how="fake")

    return measure, calls


def plan_for(fp: dict, budget_gb: float, net: dict | None = None, cls=UNet, fixed: dict | None = None, **kw):
    measure, calls = fake_measure(**kw)
    settings = PlanSettings(memory_bytes=int(budget_gb * GiB))
    return make_plan(fp, net or NET, cls, fixed or {}, settings, measure), calls


ANISO = fingerprint([0.7, 0.7, 4.0], [120, 120, 16])


def test_anisotropic_data_gets_in_plane_levels_first():
    plan, _ = plan_for(ANISO, budget_gb=64)
    v = plan.values
    assert v["data.spacing"] == [0.7, 0.7, 4.0]
    assert v["model.net.strides"] == [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert v["model.net.kernel_sizes"] == [[3, 3, 1], [3, 3, 1]] + [[3, 3, 3]] * 4
    assert v["model.net.channels"] == [16, 32, 64, 128, 256, 320]  # doubling from 16, capped at 320
    assert v["data.patch_size"] == [128, 128, 16]  # the median shape, rounded up to the divisor (32, 32, 4)
    assert v["data.batch_size"] == 2  # 5 % of 10 cases is less than one patch: at least 2
    assert (v["data.iters_per_epoch"], v["trainer.max_epochs"]) == (250, 1000)
    assert "a coarser axis waits until it is within 2x" in plan.why["model.net.strides"]
    assert plan.why["model.net.kernel_sizes"].startswith("1 along an axis still more than 2x coarser")


def test_the_patch_shrinks_until_a_measured_step_fits_the_budget():
    budget = 0.25  # GiB: 1000 B/voxel x 2 patches allows ~130 000 voxels, the median shape has 230 400
    plan, calls = plan_for(ANISO, budget_gb=budget)
    patch = plan.values["data.patch_size"]
    assert 1e7 + 1000 * math.prod(patch) * 2 <= budget * GiB  # the last measurement fits
    assert math.prod(patch) > 0.5 * (budget * GiB - 1e7) / 2000  # and not much smaller than it could be
    assert max(patch[:2]) < 128  # an in-plane axis, largest relative to the median shape, shrank first
    assert [c[2] for c in calls] == [2] * len(calls) and len(calls) >= 2  # measured at batch 2, more than once


def test_batch_grows_with_the_budget_up_to_5_percent_of_the_voxels():
    fp = fingerprint([1.0, 1.0, 1.0], [64, 64, 64], cases=200)  # 52 M voxels: 5 % = 2.6 M = 10 patches of 64³
    plan, _ = plan_for(fp, budget_gb=64)
    assert plan.values["data.patch_size"] == [64, 64, 64]
    assert plan.values["data.batch_size"] == 10
    assert "5 % of the dataset" in plan.why["data.batch_size"]
    small, _ = plan_for(fp, budget_gb=1.5)  # memory allows (1.5 GiB - 10 MB) / (1000 B x 262144) = 6
    assert small.values["data.batch_size"] == 6 and "limited by memory" in small.why["data.batch_size"]


def test_keys_you_set_are_not_planned_and_the_plan_works_around_them():
    fixed = {"data.patch_size": [64, 64, 16], "model.net.channels": [8, 16, 32], "data.batch_size": 4}
    plan, calls = plan_for(ANISO, budget_gb=64, fixed=fixed)
    assert "data.patch_size" not in plan.values and "data.batch_size" not in plan.values
    assert "model.net.channels" not in plan.values
    assert plan.values["model.net.strides"] == [[2, 2, 1], [2, 2, 1]]  # 2 poolings: 3 levels you chose
    assert plan.values["model.net.kernel_sizes"] == [[3, 3, 1], [3, 3, 1], [3, 3, 3]]
    assert calls[0][1] == [64, 64, 16] and calls[0][0]["channels"] == [8, 16, 32]


def test_a_net_without_per_level_strides_says_so():
    net = {"_target_": "medseg.nets.mk_unet.MKUNet", "spatial_dims": 3, "channels": None, "preset": "tiny"}
    plan, _ = plan_for(ANISO, budget_gb=64, net=net, cls=MKUNet)
    assert "model.net.strides" not in plan.values and "model.net.channels" not in plan.values
    assert any("takes no per-level strides/kernel_sizes" in n for n in plan.notes)
    pyramid = {**NET, "input_pyramid": {"_target_": "medseg.blocks.InputPyramid", "_partial_": True}}
    plan, calls = plan_for(ANISO, budget_gb=64, net=pyramid)
    assert "model.net.strides" not in plan.values and "strides" not in calls[0][0]
    assert any("its input pyramid halves every axis" in n for n in plan.notes)
    assert all(p % 2 ** (len(calls[-1][0]["channels"]) - 1) == 0 for p in plan.values["data.patch_size"])


def test_isotropic_data_pools_every_axis_and_recommends_3d():
    plan, _ = plan_for(fingerprint([1.0, 1.0, 1.0], [80, 80, 80]), budget_gb=64)
    assert all(s == [2, 2, 2] for s in plan.values["model.net.strides"])
    assert plan.recommended_dims == 3
    assert plan.why["model.net.kernel_sizes"] == "3 on every axis (every spacing within 2x of the finest)"


@pytest.mark.parametrize(("slices", "dims"), [(6, 2), (16, 3)])
def test_2d_is_recommended_when_the_coarse_axis_has_few_slices(slices, dims):
    plan, _ = plan_for(fingerprint([0.7, 0.7, 5.0], [200, 200, slices]), budget_gb=64)
    assert plan.recommended_dims == dims
    assert any("strongly anisotropic" in n for n in plan.notes)


def test_2d_networks_plan_the_in_plane_patch():
    net = {**NET, "spatial_dims": 2}
    plan, calls = plan_for(ANISO, budget_gb=64, net=net)
    assert plan.values["data.patch_size_2d"] == [128, 128] and "data.patch_size" not in plan.values
    assert all(len(s) == 2 for s in plan.values["model.net.strides"])
