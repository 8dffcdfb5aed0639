"""Launch-configuration choice (medseg_kernels.launch): first fitting candidate, caching, fallbacks, and every op's
last-resort GPU candidate computing the same values (run under the Triton interpreter on CPU)."""

from __future__ import annotations

import inspect
import types

import pytest
import torch
from kernel_helpers import TOL, force_triton, needs_triton, parity, randn

pytestmark = needs_triton


def _cands(*blocks: int) -> list:
    from medseg_kernels.launch import Launch

    return [Launch.of({"BLOCK": b}, 4, 1) for b in blocks]


def test_first_fit_skips_candidates_too_big_or_failing_and_reports_them():
    from medseg_kernels import launch

    def shared(c):
        if c["BLOCK"] == 64:
            raise RuntimeError("ptxas: out of registers\nlong listing")
        return c["BLOCK"] * 1000

    rank, need, tried = launch._first_fit("k", _cands(128, 64, 32, 16), shared, limit=40000)
    assert (rank, need) == (2, 32000)
    assert [t[1] for t in tried] == [128000, "RuntimeError: ptxas: out of registers"]
    with pytest.raises(launch.NoLaunchFits, match=r"k: no launch configuration fits 1000 B .*16000"):
        launch._first_fit("k", _cands(32, 16), shared, limit=1000)


def test_compile_target_records_the_choice_and_launches_nothing(monkeypatch):
    from medseg_kernels import launch

    monkeypatch.setattr(
        launch, "_target_shared", lambda kernel, bind, c, arch: c["BLOCK"] * (1500 if arch == 80 else 1000)
    )
    bound = []
    cands = _cands(128, 64, 32)
    with launch.compile_target(90) as records:
        assert launch.gpu_configs(torch.zeros(1))  # CPU tensors take GPU candidates while targeting
        args = launch.run("k", None, cands, lambda c: bound.append(c["BLOCK"]) or ((1,), (c["BLOCK"],)), torch.zeros(1))
    with launch.compile_target(80, limit=100000) as records80:
        launch.run("k", None, cands, lambda c: ((1,), ()), torch.zeros(1))
    assert not launch.gpu_configs(torch.zeros(1))
    assert args == (128,) and bound == [128]
    assert [(r.name, r.launch, r.shared, r.rank) for r in records] == [("k", cands[0], 128000, 0)]
    assert (records80[0].launch, records80[0].shared, records80[0].rank) == (cands[1], 96000, 1)
    assert records80[0].tried == [(cands[0], 192000)]


class _FakeKernel:
    """Stands in for a JITFunction on a 'CUDA' device: records launches, raises OutOfResources for some blocks."""

    def __init__(self, fail_at_launch: set[int]):
        self.launched: list[int] = []
        self.fail = fail_at_launch

    def __getitem__(self, grid):
        def launch(*args, BLOCK, num_warps, num_stages):  # noqa: N803 - a constexpr's name
            import triton

            if BLOCK in self.fail:
                raise triton.runtime.OutOfResources(300000, 232448, "shared memory")
            self.launched.append(BLOCK)

        return launch


def test_device_choice_is_cached_and_moves_on_when_a_launch_runs_out_of_resources(monkeypatch):
    from medseg_kernels import launch

    probes = []
    monkeypatch.setattr(launch, "device_shared_limit", lambda index: 232448)
    monkeypatch.setattr(
        launch, "_device_shared", lambda kernel, bind, c: probes.append(c["BLOCK"]) or c["BLOCK"] * 1000
    )
    like = types.SimpleNamespace(is_cuda=True, dtype=torch.bfloat16, device=types.SimpleNamespace(index=0))
    kernel, cands = _FakeKernel(fail_at_launch={128}), _cands(512, 128, 64)
    for _ in range(3):
        launch.run("k", kernel, cands, lambda c: ((1,), ()), like)  # type: ignore[arg-type]
    assert probes == [512, 128, 64]  # 512 probed too big, 128 fitted but failed at launch, 64 fitted; then cached
    assert kernel.launched == [64, 64, 64]
    with pytest.raises(launch.NoLaunchFits):
        launch.run("k2", _FakeKernel(fail_at_launch={64}), _cands(64), lambda c: ((1,), ()), like)  # type: ignore[arg-type]


def test_op_runs_the_reference_when_no_launch_fits(monkeypatch):
    from medseg_kernels import gate_triton
    from medseg_kernels.gate import attention_gate
    from medseg_kernels.gate_ref import attention_gate_ref
    from medseg_kernels.launch import NoLaunchFits

    force_triton(monkeypatch)

    def too_big(*args):
        raise NoLaunchFits("gate.fwd: no launch configuration fits 1 B of shared memory (test)")

    monkeypatch.setattr(gate_triton, "forward", too_big)
    x, g = torch.randn(1, 4, 6, 6), torch.randn(1, 6, 3, 3)
    params = (torch.randn(3, 4), torch.randn(3, 6), torch.randn(3), torch.randn(3), torch.randn(1))
    with pytest.warns(RuntimeWarning, match="running the PyTorch reference instead"):
        out = attention_gate(x, g, *params)
    torch.testing.assert_close(out, attention_gate_ref(x, g, *params))


def _last_gpu_candidate(monkeypatch: pytest.MonkeyPatch, module: types.ModuleType) -> list:
    """Make ``module.candidates`` return only its last GPU candidate (the smallest, most fallback one), recorded."""
    original, chosen = module.candidates, []
    sig = inspect.signature(original)

    def last(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.arguments["gpu"] = True
        cand = original(*bound.args, **bound.kwargs)[-1]
        chosen.append(cand)
        return [cand]

    monkeypatch.setattr(module, "candidates", last)
    return chosen


@pytest.mark.parametrize("same", [True, False], ids=["same", "coarse"])
def test_gate_last_resort_candidate_matches_reference(monkeypatch, same):
    from medseg_kernels import gate_triton
    from medseg_kernels.gate import attention_gate
    from medseg_kernels.gate_ref import attention_gate_ref

    force_triton(monkeypatch)
    chosen = _last_gpu_candidate(monkeypatch, gate_triton)
    x, g = randn(2, 6, 5, 6, 7), randn(2, 10, *((5, 6, 7) if same else (3, 3, 4)))
    params = [randn(4, 6, scale=0.5), randn(4, 10, scale=0.5), randn(4, scale=0.3), randn(4), randn(1, scale=0.3)]
    errs, _, _ = parity(
        attention_gate, attention_gate_ref, [x, g, *params], randn(*x.shape), ["x", "g", "wx", "wg", "b", "psi", "bpsi"]
    )
    assert max(errs.values()) < 1e-4, errs
    assert {(c["BLOCK_V"], dict(c.consts).get("HOLD_W")) for c in chosen} == {(16, None), (16, False)}


def test_global_attention_last_resort_candidate_matches_reference(monkeypatch):
    from medseg_kernels import global_attn_triton
    from medseg_kernels.attention import global_attention
    from medseg_kernels.attention_ref import global_attention_ref

    force_triton(monkeypatch)
    chosen = _last_gpu_candidate(monkeypatch, global_attn_triton)
    q, k, v = randn(1, 2, 70, 8), randn(1, 2, 70, 8), randn(1, 2, 70, 80)
    errs, _, _ = parity(global_attention, global_attention_ref, [q, k, v], randn(1, 2, 70, 80), ["q", "k", "v"])
    assert max(errs.values()) < TOL[torch.float32], errs
    assert {(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_DV"]) for c in chosen} == {(32, 32, 64)}


def test_neighborhood_attention_last_resort_candidate_matches_reference(monkeypatch):
    from medseg_kernels import neighborhood_triton
    from medseg_kernels.attention import neighborhood_attention
    from medseg_kernels.attention_ref import neighborhood_attention_ref

    force_triton(monkeypatch)
    chosen = _last_gpu_candidate(monkeypatch, neighborhood_triton)
    q, k, v = randn(1, 1, 5, 6, 7, 16), randn(1, 1, 5, 6, 7, 16), randn(1, 1, 5, 6, 7, 16)

    def op(q, k, v):
        return neighborhood_attention(q, k, v, 3)

    def ref(q, k, v):
        return neighborhood_attention_ref(q, k, v, 3)

    errs, _, _ = parity(op, ref, [q, k, v], randn(*v.shape), ["q", "k", "v"])
    assert max(errs.values()) < TOL[torch.float32], errs
    blocks = {(c["TD"], c["TH"], c["TW"], dict(c.consts).get("BLOCK_K") or c["BLOCK_Q"]) for c in chosen}
    assert blocks == {(2, 4, 8, 32)}  # fwd, dq (BLOCK_K) and dK/dV (BLOCK_Q)
