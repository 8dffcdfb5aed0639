"""Fused attention gate: Triton forward/backward vs the float64 reference, resize semantics, op, AttentionGate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import DEVICE, TOL, force_triton, gpu, leaves, needs_gpu, needs_triton, parity, randn

from medseg.blocks import AttentionGate
from medseg_kernels import gate, gate_op
from medseg_kernels.gate_ref import attention_gate_bwd_ref, attention_gate_ref, interp_matrix, upsample

NAMES = ("x", "g", "w_x", "w_g", "b", "psi", "b_psi")
# (B, Cx, Cg, F, S, Sg): g at S/2 rounded up and down, on x's grid, 2D and 3D, odd sizes, several tiles per batch
SHAPES = [
    (2, 6, 12, 5, (5, 7, 6), (3, 4, 3)),
    (2, 20, 40, 10, (11, 10, 13), (5, 5, 6)),
    (1, 20, 24, 10, (9, 8, 11), (9, 8, 11)),
    (2, 5, 7, 3, (9, 10), (5, 5)),
    (1, 8, 8, 4, (7, 9), (7, 9)),
]


def _inputs(shape: tuple, dtype: torch.dtype) -> list[torch.Tensor]:
    b, cx, cg, f, s, sg = shape
    wt = torch.float64 if dtype == torch.float64 else torch.float32  # parameters stay fp32 with half activations
    return [
        randn(b, cx, *s, dtype=dtype), randn(b, cg, *sg, dtype=dtype), randn(f, cx, dtype=wt, scale=0.5),
        randn(f, cg, dtype=wt, scale=0.5), randn(f, dtype=wt, scale=0.3), randn(f, dtype=wt),
        randn(1, dtype=wt, scale=0.3),
    ]  # fmt: skip


# Half-width of the band around relu's kink, relative to max |z|, where the kernel's pre-activation z may take the
# other sign than float64's: on a GPU, half inputs go through TF32 dots (W rounded to 10 mantissa bits: |Δz| up to
# about 4e-4 max |z|), fp32 inputs through IEEE fp32 dots. A voxel whose z falls in the band gets dz = 0 on one side
# and ψ·ds on the other (both valid subgradients), an O(1) difference in dx/dg that says nothing about the kernel.
KINK = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-3}


def _off_kinks(ins: list[torch.Tensor], dout: torch.Tensor) -> torch.Tensor:
    """``dout`` with zeros at the voxels where some channel of z (float64) lies within KINK of relu's kink: there
    ds = 0, so dz = 0 whichever sign the kernel sees and every gradient stays comparable."""
    x, g, w_x, w_g, b = (t.double() for t in ins[:5])
    phi = torch.einsum("fc,bc...->bf...", w_g, g) + b.view(1, -1, *[1] * (g.ndim - 2))
    z = torch.einsum("fc,bc...->bf...", w_x, x) + upsample(phi, tuple(x.shape[2:]))
    near = (z.abs() < KINK[dout.dtype] * z.abs().max()).any(1, keepdim=True)  # (B, 1, *S)
    assert near.double().mean() < 0.5, "the band covers most voxels: the test would check little"
    return dout.masked_fill(near, 0)


def _parity(shape: tuple, dtype: torch.dtype) -> dict[str, float]:
    ins = _inputs(shape, dtype)
    dout = _off_kinks(ins, randn(*ins[0].shape, dtype=dtype))
    errs, mine, ref_in = parity(gate.attention_gate, attention_gate_ref, ins, dout, NAMES)
    # b_ψ's gradient is one sum over all voxels with heavy cancellation (random dout): measure it on the scale of
    # ψ's gradient (the same sum weighted by relu(z)) rather than on its own, possibly tiny, value
    errs["db_psi"] = (mine[6].grad.double() - ref_in[6].grad).abs().item() / ref_in[5].grad.abs().max().item()
    return errs


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_float64_reference(monkeypatch, shape, dtype):
    force_triton(monkeypatch)
    torch.manual_seed(hash(shape) % 1000)
    errs = _parity(shape, dtype)
    assert max(errs.values()) < TOL[dtype], errs


@pytest.mark.parametrize(("n_out", "n_in"), [(8, 4), (7, 4), (7, 3), (5, 5), (4, 7), (1, 1)])
def test_resize_is_f_interpolate_align_corners_false(n_out, n_in):
    t = torch.randn(2, 3, n_in, dtype=torch.float64)
    expected = F.interpolate(t, size=n_out, mode="linear", align_corners=False)
    torch.testing.assert_close(t @ interp_matrix(n_out, n_in, torch.float64).T, expected)
    t3 = torch.randn(1, 2, n_in, n_in + 1, 3, dtype=torch.float64)
    size = (n_out, n_out + 2, 5)
    separable = t3
    for axis, n in enumerate(size):
        separable = torch.movedim(
            torch.movedim(separable, 2 + axis, -1) @ interp_matrix(n, t3.shape[2 + axis], torch.float64).T, -1, 2 + axis
        )
    torch.testing.assert_close(upsample(t3, size), separable)
    torch.testing.assert_close(upsample(t3, size), F.interpolate(t3, size=size, mode="trilinear", align_corners=False))


def test_reference_gradcheck_and_explicit_backward_float64():
    ins = leaves(*_inputs((1, 3, 4, 2, (5, 4, 3), (3, 2, 2)), torch.float64))
    ins = [t.cpu().detach().requires_grad_() for t in ins]
    assert torch.autograd.gradcheck(attention_gate_ref, tuple(ins))
    assert torch.autograd.gradcheck(gate_op.attention_gate_fwd, tuple(ins))  # the op's reference path
    dout = torch.randn_like(ins[0])
    explicit = attention_gate_bwd_ref(dout, *[t.detach() for t in ins])
    auto = torch.autograd.grad(attention_gate_ref(*ins), ins, dout)
    for a, e in zip(auto, explicit, strict=True):
        torch.testing.assert_close(e, a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes", [((5, 6), (3, 3)), ((4, 3, 5), (4, 3, 5))], ids=str)
def test_opcheck(monkeypatch, dtype, sizes):
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    ins = [t.cpu().to(dtype).requires_grad_() for t in _inputs((2, 4, 6, 3, *sizes), dtype)]
    torch.library.opcheck(torch.ops.medseg.attention_gate_fwd.default, tuple(ins))
    dout = torch.randn_like(ins[0])
    torch.library.opcheck(torch.ops.medseg.attention_gate_bwd.default, (dout, *[t.detach() for t in ins]))


def test_torch_compile_sees_one_op(monkeypatch):
    monkeypatch.setenv("MEDSEG_KERNELS", "reference")
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    ins = [t.cpu() for t in _inputs((1, 4, 6, 3, (6, 5), (3, 3)), torch.float32)]
    fn = torch.compile(lambda *a: gate_op.attention_gate_fwd(*a) * 2, backend=backend, fullgraph=True)
    torch.testing.assert_close(fn(*ins), attention_gate_ref(*ins) * 2)
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert sum("attention_gate_fwd" in t for t in targets) == 1, targets


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("coarse", [True, False])
def test_fused_attention_gate_module_matches_unfused(dims, coarse):
    torch.manual_seed(0)
    kwargs = {"spatial_dims": dims, "subsample": 1, "out_proj": False}
    plain, fused = AttentionGate(6, 8, **kwargs), AttentionGate(6, 8, fused=True, **kwargs)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 6, *[7] * dims, dtype=torch.float64)
    g = torch.randn(2, 8, *[4 if coarse else 7] * dims, dtype=torch.float64)
    plain, fused = plain.double(), fused.double()
    torch.testing.assert_close(fused(x, g), plain(x, g))
    fused(x, g).square().sum().backward()
    plain(x, g).square().sum().backward()
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with pytest.raises(ValueError, match="fused"):
        AttentionGate(6, 8, spatial_dims=dims, subsample=2, out_proj=False, fused=True)


@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    "shape", [(2, 64, 128, 32, (64, 64, 64), (32, 32, 32)), (1, 32, 32, 16, (40, 33, 47), (40, 33, 47)),
              (2, 128, 256, 64, (96, 95), (48, 48))], ids=str,
)  # fmt: skip
def test_gpu_parity(shape, dtype):
    assert DEVICE == "cuda"
    torch.manual_seed(0)
    errs = _parity(shape, dtype)
    # fp32: the widest case sums 128 (kernel) and 256 (host GEMM) channels in another order than float64: 4e-5 (out)
    # and 7e-5 (dx) measured on an H100, the size of fp32 rounding there. Half inputs: the GPU's dots are TF32 (the
    # interpreter's are exact), so TF32's precision bounds the errors, not fp16's: a float64 emulation of the TF32
    # weight rounding differs from the exact reference by up to 1.6e-2 (fp16, widest case, off the kinks).
    tol = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 3e-2}[dtype]
    assert max(errs.values()) < tol, errs
