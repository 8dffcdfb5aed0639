"""Initialising a network from another run's checkpoint (Turbolift stages, fine-tuning), auditable by hash."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def weights_hash(state: dict[str, torch.Tensor], keys: list[str] | None = None) -> str:
    """SHA-256 over the (sorted) parameter names and their float32 bytes — equal hashes mean equal weights."""
    digest = hashlib.sha256()
    for key in sorted(keys if keys is not None else state):
        digest.update(key.encode())
        digest.update(state[key].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def init_from_checkpoint(module: nn.Module, checkpoint: str | Path, strict: bool = True) -> dict[str, Any]:
    """Load ``checkpoint``'s weights into ``module`` (optimizer and epoch counter are not restored).

    Layers whose shapes differ (another number of classes or input channels) are skipped and listed; with
    ``strict`` every parameter name must exist on both sides, otherwise missing/unexpected names are listed too.

    Returns:
        ``{"checkpoint", "sha256" (of the loaded weights as stored), "sha256_after_load" (same keys, in the
        module), "skipped", "strict"}``; the two hashes are equal when the load was exact.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"init_from={path}: checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        raise ValueError(
            f"init_from={path}: the network differs (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            "set init_strict=false to load the matching layers only"
        )
    loaded = [k for k in state if k in own and own[k].shape == state[k].shape]
    skipped = sorted(set(own) - set(loaded)) + [f"{k} (not in this network)" for k in unexpected]
    module.load_state_dict({k: state[k] for k in loaded}, strict=False)
    if skipped:
        log.warning("init_from %s: %d tensors skipped (shape or name mismatch): %s", path, len(skipped), skipped)
    after = module.state_dict()
    return {
        "checkpoint": str(path),
        "sha256": weights_hash(state, loaded),
        "sha256_after_load": weights_hash(after, loaded),
        "loaded": len(loaded),
        "skipped": skipped,
        "strict": strict,
    }
