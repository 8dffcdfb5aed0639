"""Peer networks and compute-utilisation helpers for ``scripts/bench_train.py``.

* :func:`nnunet_plan`: the stages, widths and strides nnU-Net's default planner (v2 ``ExperimentPlanner``,
  3d_fullres) gives an isotropic cubic patch: pool while the edge stays a whole number >= 4 voxels
  (``UNet_featuremap_min_edge_length``), widths ``min(32 * 2**i, 320)``, 3x3x3 kernels, first stage stride 1. For a
  128^3 patch: 6 stages, widths 32 64 128 256 320 320, strides 1 2 2 2 2 2.
* :func:`plain_conv_unet`: nnU-Net's own ``PlainConvUNet`` (package ``dynamic-network-architectures``, extra
  ``bench``) with the architecture kwargs nnU-Net's plans give it: 2 convs per stage (encoder and decoder), conv
  bias, ``InstanceNorm3d(eps=1e-5, affine=True)``, ``LeakyReLU(inplace=True)`` (slope 0.01), no dropout, deep
  supervision on as nnU-Net trains it (the benchmark's loss reads the full-resolution head; the other heads are
  computed and get no gradient).
* :func:`dyn_unet`: MONAI's ``DynUNet`` at the same widths, depth, kernels and strides (instance norm, leaky ReLU).
* :func:`peak_flops`: dense bf16 tensor-core peak by GPU name (NVIDIA data sheets), or on a CPU a measured fp32
  matmul rate; MFU = FLOPs of a train step (``torch.utils.flop_counter``) / step time / that peak.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

MAX_FEATURES_3D = 320  # nnU-Net's UNet_max_features_3d
BASE_FEATURES = 32  # nnU-Net's UNet_base_num_features
MIN_EDGE = 4  # nnU-Net's UNet_featuremap_min_edge_length
# Dense (no sparsity) bf16 tensor-core peak, FLOP/s, from NVIDIA's data sheets; matched in this order by substring.
PEAK_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12))
SKIP_NNUNET = "nnunet_plain skipped: `pip install dynamic-network-architectures` (extra `bench`) to benchmark it"


def nnunet_plan(patch: int) -> dict[str, list[int]]:
    """Widths and strides per stage of nnU-Net's 3d_fullres plan for an isotropic ``patch``^3."""
    pools = 0
    while patch % 2 ** (pools + 1) == 0 and patch // 2 ** (pools + 1) >= MIN_EDGE:
        pools += 1
    stages = pools + 1
    features = [min(BASE_FEATURES * 2**i, MAX_FEATURES_3D) for i in range(stages)]
    return {"features": features, "strides": [1] + [2] * pools}


def nnunet_available() -> bool:
    """Whether ``dynamic_network_architectures`` (nnU-Net's network package) imports."""
    try:
        import dynamic_network_architectures.architectures.unet  # noqa: F401
    except ImportError:
        return False
    return True


def plain_conv_unet(patch: int, classes: int) -> tuple[nn.Module, str]:
    """nnU-Net's PlainConvUNet as its 3d_fullres plans build it for ``patch``^3, and a description."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    plan = nnunet_plan(patch)
    stages = len(plan["features"])
    net = PlainConvUNet(
        input_channels=1, n_stages=stages, features_per_stage=plan["features"], conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * stages, strides=[[s] * 3 for s in plan["strides"]],
        n_conv_per_stage=[2] * stages, num_classes=classes, n_conv_per_stage_decoder=[2] * (stages - 1),
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None, dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=True,
    )  # fmt: skip
    desc = f"nnU-Net PlainConvUNet (3d_fullres plan for {patch}^3): features {plan['features']}, strides "
    return net, desc + f"{plan['strides']}, 2 convs/stage, InstanceNorm, LeakyReLU, deep supervision"


def dyn_unet(patch: int, classes: int) -> tuple[nn.Module, str]:
    """MONAI DynUNet at nnU-Net's widths, depth, kernels and strides for ``patch``^3, and a description."""
    from monai.networks.nets import DynUNet

    plan = nnunet_plan(patch)
    stages = len(plan["features"])
    net = DynUNet(
        spatial_dims=3, in_channels=1, out_channels=classes, kernel_size=[3] * stages, strides=plan["strides"],
        upsample_kernel_size=plan["strides"][1:], filters=plan["features"],
        norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
    )  # fmt: skip
    return net, f"monai DynUNet filters={plan['features']} strides={plan['strides']} (instance norm, leaky ReLU)"


def step_flops(step: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one train step (forward + backward; convolutions and matmuls) by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return float(counter.get_total_flops())


def peak_flops(device: str) -> tuple[float | None, str]:
    """(FLOP/s, what it is) the MFU is measured against: the card's dense bf16 peak on a GPU, else a measured CPU
    fp32 matmul rate (torch's own threads, 2048^2 matmuls)."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, flops in PEAK_BF16:
            if key in name:
                return flops, f"dense bf16 peak of {key} ({flops / 1e12:.0f} TFLOP/s, NVIDIA data sheet)"
        return None, f"no dense bf16 peak on record for {name}: MFU left empty"
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b  # warm-up
    t0, reps = time.perf_counter(), 5
    for _ in range(reps):
        a @ b
    rate = reps * 2 * 2048**3 / (time.perf_counter() - t0)
    return rate, f"measured CPU fp32 matmul rate ({rate / 1e9:.0f} GFLOP/s, 2048^2, {torch.get_num_threads()} threads)"
