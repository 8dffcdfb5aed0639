"""Kernels compile for sm_90 (H100/H200) without a GPU; the package imports and falls back without triton."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_helpers import SHARED_LIMIT, needs_triton

from medseg_kernels import backend
from medseg_kernels.dispatch import use_triton

SCRIPT = Path(__file__).with_name("sm90_compile.py")
FAST = ["global-bf16", "na-bf16-3d", "gate-bf16-up3d"]
SLOW = [
    "global-fp16-wide", "global-fp32", "global-bf16-d128", "gate-bf16-same3d", "gate-fp16-up2d-wide",
    "gate-bf16-same3d-wide", "gate-bf16-same3d-limit", "gate-fp32-same3d-limit", "gate-bf16-up3d-limit",
    "gate-fp32-up3d-wide", "na-bf16-3d-d128", "na-fp32-2d", "na-fp32-3d-d128",
]  # fmt: skip
KERNELS = {"global": ["global.fwd", "global.dkdv", "global.dq"], "gate": ["gate.fwd", "gate.bwd"],
           "na": ["na.fwd", "na.dq", "na.dkdv"]}  # fmt: skip
ARCHS = (90, 80)


def _compile(cases: list[str]) -> list[dict]:
    """Run sm90_compile.py for sm_90 and sm_80 side by side (one process each: two cores) and parse its lines."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), "--arch", str(arch), *cases],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for arch in ARCHS
    ]
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err[-3000:]
        lines += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return lines


@needs_triton
@pytest.mark.parametrize("cases", [FAST, pytest.param(SLOW, marks=pytest.mark.slow)], ids=["fast", "slow"])
def test_kernels_compile_for_sm90_within_shared_memory(cases):
    """What production would launch (its own candidate choice, compiled for the target by the installed Triton) fits
    sm_90 and sm_80, and every case (the supported widths and dtypes up to their limits) has a fitting candidate."""
    lines = _compile(cases)
    assert [line for line in lines if "error" in line] == []
    for case in cases:
        for arch in ARCHS:
            launches = [line for line in lines if line["case"] == case and line["arch"] == arch and "kernel" in line]
            assert [line["kernel"] for line in launches] == KERNELS[case.split("-")[0]], (case, arch)
            for line in launches:
                assert 0 < line["shared"] <= SHARED_LIMIT[arch], line
                assert all(isinstance(need, str) or need > SHARED_LIMIT[arch] for _, need in line["tried"]), line


def test_backend_env_var(monkeypatch):
    t = torch.zeros(2)
    monkeypatch.delenv("MEDSEG_KERNELS", raising=False)
    assert backend(t) == "reference" and not use_triton(t)  # CPU tensor
    monkeypatch.setenv("MEDSEG_KERNELS", "triton")
    assert backend(t) == "triton" and use_triton(t, t)
    assert not use_triton(t.double()) and not use_triton(t, t.half())  # float64, mixed dtypes: reference
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    assert backend(t) == "reference"


def test_package_works_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from medseg_kernels import triton_available\n"
        "from medseg_kernels.attention import global_attention, neighborhood_attention\n"
        "from medseg_kernels.gate import attention_gate\n"
        "from medseg.blocks import AttentionGate\n"
        "assert not triton_available()\n"
        "q = torch.randn(1, 1, 5, 5, 4)\n"
        "assert neighborhood_attention(q, q, q, 3).shape == q.shape\n"
        "assert global_attention(q.flatten(2, 3), q.flatten(2, 3), q.flatten(2, 3)).shape == (1, 1, 25, 4)\n"
        "gate = AttentionGate(4, 6, spatial_dims=2, subsample=1, out_proj=False, fused=True)\n"
        "assert gate(torch.randn(1, 4, 6, 6), torch.randn(1, 6, 3, 3)).shape == (1, 4, 6, 6)\n"
    )
    env = {**os.environ, "MEDSEG_KERNELS": ""}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def test_gate_width_limit_falls_back_to_reference(monkeypatch):
    from medseg_kernels.gate_op import triton_supported

    monkeypatch.setenv("MEDSEG_KERNELS", "triton")
    x, g_same, g_half = torch.zeros(1, 256, 2, 2), torch.zeros(1, 256, 2, 2), torch.zeros(1, 512, 1, 1)
    w = torch.zeros(64, 256)
    assert triton_supported(x, g_same, w, w)  # 64 × (256 + 256): the largest compiled configuration
    assert not triton_supported(x, g_same, torch.zeros(128, 256), torch.zeros(128, 256))
    assert triton_supported(x, g_half, torch.zeros(64, 256), torch.zeros(64, 512))  # coarse g: W_g not in the kernel
    assert not triton_supported(x, g_half, torch.zeros(128, 256), torch.zeros(128, 512))
