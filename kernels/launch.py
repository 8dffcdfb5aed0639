"""Launch configurations that fit the GPU: the first candidate whose *compiled* kernel fits the shared memory.

How much shared memory a Triton kernel takes depends on the Triton version (its layouts, staging and pipelining), not
only on the tile sizes: the same configuration of the gate's backward takes 212992 B with triton 3.9 and 245760 B
with 3.8 and 3.6, above the 232448 B a block may use on an H100. So every op lists, per kernel, candidate launches in
order of preference (largest tiles and deepest pipeline first), and :func:`run` launches the first that fits:

- on a CUDA device: each candidate is compiled by Triton for that device with the launch's own arguments
  (``JITFunction.warmup``; the launch then reuses that binary) and checked against the device's shared memory per
  block; a launch that still raises Triton's ``OutOfResources`` moves on to the next candidate;
- inside :func:`compile_target` (no GPU needed): compiled for a named architecture (sm_90: 232448 B, sm_80:
  166912 B) from the same arguments, recorded and not launched. tests/kernels/sm90_compile.py checks with it what
  production would launch with the installed Triton, and that every supported shape and dtype has a fitting candidate;
- on CPU tensors (the Triton interpreter): the first candidate (the ops give one there).

A candidate that fails to compile (ptxas out of registers, say) does not fit. The choice is cached per (kernel,
candidates, dtype, device). When no candidate fits, :class:`NoLaunchFits` is raised and the op's registration layer
runs the torch reference instead.

Import this module only where triton is importable (the ``*_triton`` modules import it).
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import triton

SHARED_LIMIT = {90: 232448, 80: 166912}  # bytes of shared memory one block may use: H100/H200 (sm_90), A100 (sm_80)
_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int32: "i32", torch.int64: "i64"}


@dataclass(frozen=True)
class Launch:
    """One launch configuration of a kernel: its constexpr values and Triton options (``None``: Triton's default)."""

    consts: tuple[tuple[str, Any], ...]
    num_warps: int | None = None
    num_stages: int | None = None

    @classmethod
    def of(cls, consts: dict[str, Any], num_warps: int | None = None, num_stages: int | None = None) -> Launch:
        return cls(tuple(consts.items()), num_warps, num_stages)

    def __getitem__(self, name: str) -> Any:
        return dict(self.consts)[name]

    def options(self) -> dict[str, int]:
        """The Triton options that are set (``num_warps``, ``num_stages``)."""
        opts = {"num_warps": self.num_warps, "num_stages": self.num_stages}
        return {k: v for k, v in opts.items() if v is not None}

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a launch: constexprs and options."""
        return {**dict(self.consts), **self.options()}

    def describe(self) -> dict[str, Any]:
        """Plain dict (for reports)."""
        return {**dict(self.consts), **self.options()}


Grid = tuple[int, ...]
Bind = Callable[[Launch], tuple[Grid, tuple[Any, ...]]]  # a launch → (grid, positional arguments of the kernel)


@dataclass
class Choice:
    """What :func:`run` chose for one kernel launch under :func:`compile_target`."""

    name: str
    launch: Launch
    shared: int  # bytes the chosen candidate's compiled kernel takes
    rank: int  # its position among the candidates (0: the preferred one fitted)
    tried: list[tuple[Launch, int | str]] = field(default_factory=list)  # earlier candidates: bytes, or the error


class NoLaunchFits(RuntimeError):
    """No candidate launch configuration of a kernel fits the device (or target)."""


_CHOSEN: dict[tuple, int] = {}  # (kernel, candidates, dtype, device) → index of the candidate that fitted
_TARGET: list[tuple[int, int, list[Choice]]] = []  # (arch, limit, records) while compile_target is active


@contextlib.contextmanager
def compile_target(arch: int, limit: int | None = None) -> Iterator[list[Choice]]:
    """Within the block, :func:`run` compiles for ``sm_<arch>`` (no GPU needed), chooses and records, never launches.

    Args:
        arch: compute capability as an int, e.g. 90 (H100/H200) or 80 (A100).
        limit: shared memory per block in bytes (default :data:`SHARED_LIMIT` of ``arch``).

    Yields:
        The list the choices are appended to, one :class:`Choice` per kernel launch.
    """
    records: list[Choice] = []
    _TARGET.append((arch, SHARED_LIMIT[arch] if limit is None else limit, records))
    try:
        yield records
    finally:
        _TARGET.pop()


def gpu_configs(t: torch.Tensor) -> bool:
    """Whether launches for ``t`` take GPU candidates: a CUDA tensor, or inside :func:`compile_target`."""
    return t.is_cuda or bool(_TARGET)


@functools.cache
def device_shared_limit(index: int) -> int:
    """Bytes of shared memory one block may use on CUDA device ``index`` (what Triton checks at launch)."""
    try:
        from triton.runtime import driver

        return int(driver.active.utils.get_device_properties(index)["max_shared_mem"])
    except Exception:  # noqa: BLE001 - an older/other driver API: ask torch
        props = torch.cuda.get_device_properties(index)
        return int(getattr(props, "shared_memory_per_block_optin", props.shared_memory_per_block))


def run(name: str, kernel: Any, candidates: Sequence[Launch], bind: Bind, like: torch.Tensor) -> tuple[Any, ...]:
    """Launch ``kernel`` with the first of ``candidates`` that fits (see the module docstring).

    Args:
        name: the kernel's name in reports and errors (e.g. ``gate.bwd``).
        kernel: the ``@triton.jit`` function.
        candidates: launch configurations, preferred first.
        bind: grid and positional arguments of the kernel for a candidate (constexprs come from the candidate).
        like: an input tensor: its device decides how to choose, its dtype is part of the cache key.

    Returns:
        The positional arguments the kernel was launched with (output buffers a caller reads).

    Raises:
        NoLaunchFits: no candidate compiles within the shared memory of the device or target.
    """
    if _TARGET:
        arch, limit, records = _TARGET[-1]
        rank, shared, tried = _first_fit(name, candidates, lambda c: _target_shared(kernel, bind, c, arch), limit)
        records.append(Choice(name, candidates[rank], shared, rank, tried))
        return bind(candidates[rank])[1]
    if not like.is_cuda:  # the Triton interpreter: one candidate
        grid, args = bind(candidates[0])
        kernel[grid](*args, **candidates[0].kwargs())
        return args
    key = (kernel, tuple(candidates), like.dtype, like.device.index)
    if key not in _CHOSEN:
        limit = device_shared_limit(like.device.index or 0)
        _CHOSEN[key] = _first_fit(name, candidates, lambda c: _device_shared(kernel, bind, c), limit)[0]
    rank = _CHOSEN[key]
    grid, args = bind(candidates[rank])
    try:
        kernel[grid](*args, **candidates[rank].kwargs())
    except triton.runtime.OutOfResources:  # the probe fitted, this launch's specialisation does not: next one
        if rank + 1 == len(candidates):
            raise NoLaunchFits(f"{name}: the last candidate ran out of resources at launch") from None
        rest = candidates[rank + 1 :]
        limit = device_shared_limit(like.device.index or 0)
        _CHOSEN[key] = rank + 1 + _first_fit(name, rest, lambda c: _device_shared(kernel, bind, c), limit)[0]
        return run(name, kernel, candidates, bind, like)
    return args


def _first_fit(
    name: str, candidates: Sequence[Launch], shared: Callable[[Launch], int], limit: int
) -> tuple[int, int, list[tuple[Launch, int | str]]]:
    """(index, bytes, what the earlier candidates needed) of the first candidate that compiles within ``limit``."""
    tried: list[tuple[Launch, int | str]] = []
    for i, cand in enumerate(candidates):
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Triton prints whole PTX listings on ptxas errors
                need = shared(cand)
        except Exception as err:  # noqa: BLE001 - a candidate that does not compile does not fit
            tried.append((cand, f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err) else ''}"))
            continue
        if need <= limit:
            return i, need, tried
        tried.append((cand, need))
    needs = "; ".join(f"{c.describe()}: {n}" for c, n in tried)
    raise NoLaunchFits(f"{name}: no launch configuration fits {limit} B of shared memory ({needs})")


def _device_shared(kernel: Any, bind: Bind, launch: Launch) -> int:
    """Shared memory of ``kernel`` compiled by Triton for the current CUDA device with this launch's arguments."""
    grid, args = bind(launch)
    compiled = kernel.warmup(*args, grid=grid, **launch.kwargs())
    compiled = compiled.result() if hasattr(compiled, "result") else compiled  # an asynchronous compile
    return int(compiled.metadata.shared)


def _target_shared(kernel: Any, bind: Bind, launch: Launch, arch: int) -> int:
    """Shared memory of ``kernel`` compiled for ``sm_<arch>`` (no GPU), its signature typed from the arguments."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    args = bind(launch)[1]
    consts = dict(launch.consts)
    names = [p.name for p in kernel.params if not p.is_constexpr]
    sig = {n: _arg_type(a) for n, a in zip(names, args, strict=True)} | dict.fromkeys(consts, "constexpr")
    src = ASTSource(fn=kernel, signature=sig, constexprs=consts)
    return int(triton.compile(src, target=GPUTarget("cuda", arch, 32), options=launch.options()).metadata.shared)


def _arg_type(a: Any) -> str:
    """Triton signature type of a kernel argument, as the JIT would type it."""
    if isinstance(a, torch.Tensor):
        return "*" + _TYPES[a.dtype]
    if isinstance(a, bool):
        return "i1"
    if isinstance(a, int):
        return "i32" if -(2**31) <= a < 2**31 else "i64"
    if isinstance(a, float):
        return "fp32"
    raise TypeError(f"unsupported kernel argument {type(a).__name__}")
