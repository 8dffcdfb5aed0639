"""``@triton.jit`` helpers and constants shared by the Triton kernels of every op.

Import this module only where triton is importable (the ``*_triton`` modules import it; they are imported lazily by
the ops). Globals read inside ``@triton.jit`` functions must be ``tl.constexpr``: :data:`LOG2E_C` and :data:`LN2_C`
are the ones kernels use, :data:`LOG2E` the plain float the host code multiplies scales by.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # log2(e): softmax scores are scaled by it so that kernels can use exp2
LN2 = 0.6931471805599453  # ln(2): a base-2 logsumexp times LN2 is the natural one the references save
LOG2E_C = tl.constexpr(LOG2E)
LN2_C = tl.constexpr(LN2)


@triton.jit
def load_tile(base, rows, cols, ld, rmask, cmask):
    """(rows, cols) tile of a row-major matrix with leading dimension ``ld``; zeros outside the masks.

    ``rows`` may be any row indices (e.g. the token indices of a neighbourhood), not only a contiguous range.
    """
    return tl.load(base + rows[:, None] * ld + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0)


@triton.jit
def store_tile(base, rows, cols, ld, rmask, cmask, value):
    """Store ``value`` (rows, cols) into a row-major matrix, cast to its element type, inside the masks."""
    mask = rmask[:, None] & cmask[None, :]
    tl.store(base + rows[:, None] * ld + cols[None, :], value.to(base.dtype.element_ty), mask=mask)
