"""The memory probe: how much memory one training step of a network at a patch and batch size takes, measured by
running it, and cached.

* On CUDA: a real forward + loss + backward on the GPU at the training precision; the peak of
  ``torch.cuda.max_memory_allocated`` above what was allocated before, plus the optimizer's state (AdamW: two
  buffers per parameter; it is allocated by the first ``step``).
* On the CPU: the same step on PyTorch's ``meta`` device (shapes and dtypes, no arithmetic): the bytes of every
  tensor autograd saves for the backward pass (deduplicated by storage), plus parameters, gradients and optimizer
  state, plus the largest activation twice (the gradient buffers alive while one layer's backward runs). A step that
  the meta device cannot run (a custom kernel without a meta implementation) runs on real CPU tensors instead, with
  the same accounting. docs/planning.md compares this with the measured peak RSS of real CPU steps.

Results are cached under ``<cache_dir>/trials/`` by everything they depend on (network config, channels, classes,
patch, batch, device, precision, torch version).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medseg.config import build
from medseg.data.cache import digest
from medseg.fileio import atomic_write_json

log = logging.getLogger(__name__)
TRIAL_VERSION = 1


@dataclass
class Trial:
    """One measured step.

    Attributes:
        bytes: peak memory of the step (activations, parameters, gradients, optimizer state).
        activations: the part that grows with the batch (bytes at this batch).
        how: ``cuda`` (measured allocations), ``meta`` or ``cpu`` (counted saved tensors).
        seconds: wall time of one step when it was timed (CUDA: the second of two steps), else None.
    """

    bytes: int
    activations: int
    how: str
    seconds: float | None = None


def _loss(out: Any, classes: int) -> torch.Tensor:
    """Cross-entropy + soft Dice on a random target: the memory a Dice+CE loss takes on the logits."""
    logits = out[0] if isinstance(out, (list, tuple)) else out  # deep supervision: the full-resolution output
    target = torch.zeros(logits.shape[0], *logits.shape[2:], dtype=torch.long, device=logits.device)
    probs = torch.softmax(logits.float(), 1)
    onehot = F.one_hot(target, classes).movedim(-1, 1).float()
    dice = 1 - (2 * (probs * onehot).sum() + 1) / (probs.sum() + onehot.sum() + 1)
    loss = F.cross_entropy(logits.float(), target) + dice
    if isinstance(out, (list, tuple)):
        loss = loss + sum(o.float().mean() for o in out[1:])
    return loss


def _count_step(net_cfg: dict[str, Any], shape: Sequence[int], classes: int, device: str) -> Trial:
    """One step on ``meta`` (or real CPU) tensors, counting the bytes autograd saves."""
    with torch.device(device):
        net = build(net_cfg)
        x = torch.zeros(*shape)
    net.train()
    params = {p.untyped_storage()._cdata for p in net.parameters()}
    saved: dict[int, int] = {}
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
            largest[0] = max(largest[0], storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(net(x), classes)
    loss.backward()
    n_param = sum(p.numel() * p.element_size() for p in net.parameters())
    activations = sum(saved.values()) + 2 * largest[0]
    return Trial(bytes=activations + 4 * n_param, activations=activations, how=device)


def _cuda_step(net_cfg: dict[str, Any], shape: Sequence[int], classes: int, precision: str | None) -> Trial:
    """Two real steps on the current CUDA device: the peak allocation of the second above what was allocated before
    the network was built, the part above parameters + optimizer state + input (activations), and its time."""
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    net = build(net_cfg).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(*shape, device=device)
    dtype = torch.bfloat16 if precision is None or "bf16" in str(precision) else None
    seconds, base = 0.0, before
    for step in range(2):
        torch.cuda.synchronize()
        if step == 1:
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = _loss(net(x), classes)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated()
    del net, optimizer, x
    torch.cuda.empty_cache()
    return Trial(bytes=int(peak - before), activations=int(peak - base), how="cuda", seconds=seconds)


def measure(
    net_cfg: dict[str, Any],
    in_channels: int,
    classes: int,
    patch: Sequence[int],
    batch: int,
    device: str = "cpu",
    precision: str | None = None,
    cache_dir: Path | None = None,
) -> Trial:
    """Peak memory of one training step of ``net_cfg`` (a ``model.net`` config as plain data) on ``batch`` patches
    of size ``patch`` with ``in_channels`` channels and ``classes`` output classes, on ``device`` (``cpu`` or
    ``cuda``); cached in ``cache_dir/trials/``."""
    shape = (int(batch), int(in_channels), *[int(p) for p in patch])
    cfg = {**net_cfg, "in_channels": int(in_channels), "out_channels": int(classes)}
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    key = digest([TRIAL_VERSION, cfg, shape, classes, name, precision, torch.__version__], 24)
    path = Path(cache_dir) / "trials" / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            return Trial(**json.loads(path.read_text()))
    if device == "cuda":
        trial = _cuda_step(cfg, shape, classes, precision)
    else:
        try:
            trial = _count_step(cfg, shape, classes, "meta")
        except (RuntimeError, NotImplementedError, TypeError) as err:
            log.info("meta trial failed (%s): counting on real CPU tensors", err)
            trial = _count_step(cfg, shape, classes, "cpu")
    if path is not None:
        with contextlib.suppress(OSError):
            atomic_write_json(path, asdict(trial))
    return trial


def time_cpu_step(net_cfg: dict[str, Any], in_channels: int, classes: int, patch: Sequence[int], batch: int) -> float:
    """Seconds of one real training step on the CPU (after one warm-up step), for the plan's time estimate."""
    cfg = {**net_cfg, "in_channels": int(in_channels), "out_channels": int(classes)}
    net = build(cfg).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(int(batch), int(in_channels), *[int(p) for p in patch])
    seconds = 0.0
    for _ in range(2):
        start = time.perf_counter()
        _loss(net(x), classes).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
    return seconds
