"""Fail-fast checks of a training config against the prepared data, and of the run directory.

Every problem names the offending config key (``model.net.norm='batchy': ...``) so the user knows what to override.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from medseg.run_dir import RunDir
from medseg.safe_config import ConfigRefused, load_yaml


class ConfigError(ValueError):
    """An invalid configuration; the message lists every offending key."""


# Keys holding a normalisation / activation spec anywhere under model.net (block configs included).
NORM_KEYS, ACT_KEYS = ("norm",), ("act", "up_act")


def check_writable(folder: str | Path, key: str = "hydra.run.dir") -> None:
    """Create ``folder`` if needed and write (then delete) a probe file there; a clear ``OSError`` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".medseg_probe_"):
            pass
    except OSError as err:
        where = f"{key} {folder}" if key.startswith("-") else f"{key}={folder}"
        raise OSError(f"{where}: not writable ({err.strerror or type(err).__name__})") from err


def check_creatable(folder: str | Path, key: str = "hydra.run.dir") -> None:
    """Without creating anything: ``folder`` is (or can be made) a writable folder; a clear ``OSError`` otherwise."""
    folder = Path(folder).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        reason = f"NotADirectoryError: {existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"PermissionError: cannot write in {existing}"
    else:
        return
    raise OSError(f"{key}={folder}: not writable ({reason})")


def validate_config(cfg: DictConfig, dm: Any, run: RunDir | None = None) -> None:
    """Check ``cfg`` against the prepared data module ``dm``; one ``ConfigError`` listing every problem.

    Checked: 2D/3D agreement of network and data, patch sizes (positive, divisible per axis by what the network
    class's ``patch_divisor`` says: the product of its pooling strides),
    norm/act names, classes and channels of the data against the network and the loss, spacing, fractions, epochs,
    learning rate; and, when resuming in ``run_dir``, that network and preprocessing match the saved run.
    """
    problems: list[str] = []
    net: dict[str, Any] = _plain(cfg.model.net)
    problems += _check_dims_and_patch(net, dm)
    problems += _check_layer_specs(net, int(net.get("spatial_dims", dm.spatial_dims)))
    problems += _check_classes(cfg, net, dm)
    problems += _check_ranges(cfg, dm)
    if run is not None:
        problems += _check_resume(cfg, run)
    if problems:
        if len(problems) == 1:
            raise ConfigError(f"invalid configuration: {problems[0]}")
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _check_dims_and_patch(net: dict[str, Any], dm: Any) -> list[str]:
    out = []
    dims = net.get("spatial_dims")
    if dims is not None and dims != dm.spatial_dims:
        out.append(
            f"model.net.spatial_dims={dims} but data.spatial_dims={dm.spatial_dims}: a {dims}D network needs "
            f"{dims}D patches (data.spatial_dims follows model.net.spatial_dims unless overridden)"
        )
    key, patch = ("data.patch_size", list(dm.patch)) if dm.spatial_dims == 3 else ("data.patch_size_2d", dm.patch[:2])
    if not all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) and p >= 1 for p in patch):
        return [*out, f"{key}={patch} must hold positive integers"]
    divisor = patch_divisor(net)
    if divisor is not None and len(divisor) == len(patch) and any(p % d for p, d in zip(patch, divisor, strict=True)):
        fixed = [-(-p // d) * d for p, d in zip(patch, divisor, strict=True)]
        depth = len(net.get("channels") or ()) - 1
        if net.get("strides") is None and depth >= 1 and set(divisor) == {2**depth}:
            why = f"2**{depth}={2**depth} (model.net.channels has {depth + 1} levels)"
        else:
            why = f"{divisor} per axis (the product of model.net.strides along each axis)"
        out.append(f"{key}={patch} must be divisible by {why}: e.g. {key}={fixed}")
    return out


def patch_divisor(net: dict[str, Any]) -> list[int] | None:
    """What each patch axis must be divisible by, as the network class says (its ``patch_divisor(config)``
    classmethod); None when the class does not say or cannot be imported (building it reports that)."""
    from hydra._internal.utils import _locate

    target = net.get("_target_")
    try:
        cls = _locate(target) if isinstance(target, str) else None
        ask = getattr(cls, "patch_divisor", None)
        return [int(d) for d in ask(net)] if callable(ask) else None
    except Exception:  # noqa: BLE001 - an unimportable target or a malformed config: instantiation names it
        return None


def _check_layer_specs(net: dict[str, Any], spatial_dims: int) -> list[str]:
    from medseg.layers import act_layer, norm_layer

    out = []
    for path, key, spec in _walk_keys(net, "model.net", NORM_KEYS + ACT_KEYS):
        is_norm = key in NORM_KEYS
        kind, known = ("normalisation", _known_names(True)) if is_norm else ("activation", _known_names(False))
        name = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
        if isinstance(name, str) and name.lower() not in (*known, "", "none"):
            out.append(f"{path}={spec!r}: unknown {kind} {name!r}; names: {', '.join(known)}")
            continue
        try:
            norm_layer(spec, spatial_dims, 8) if is_norm else act_layer(spec, 8)
        except Exception as err:  # noqa: BLE001 - MONAI/torch raise KeyError/ValueError/TypeError for bad specs
            out.append(f"{path}={spec!r}: not a valid {kind} ({type(err).__name__}: {' '.join(str(err).split())})")
    return out


def _walk_keys(node: Any, path: str, keys: tuple[str, ...]) -> list[tuple[str, str, Any]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and not isinstance(value, dict):
                found.append((f"{path}.{key}", key, value))
            else:
                found += _walk_keys(value, f"{path}.{key}", keys)
    return found


def _known_names(norm: bool) -> list[str]:
    from medseg.layers import layer_names

    return layer_names("norm" if norm else "act")


def _check_classes(cfg: DictConfig, net: dict[str, Any], dm: Any) -> list[str]:
    out = []
    n = dm.num_classes
    declared = dm.spec.num_classes if dm.spec is not None else None
    if declared is not None and declared > n:
        name = dm.spec.labels.get(declared - 1, "")
        out.append(
            f"data.num_classes={n} but dataset.json declares label {declared - 1} ({name}): use at least {declared}"
        )
    for key, value in (
        ("model.net.out_channels", net.get("out_channels")),
        ("model.num_classes", cfg.model.get("num_classes")),
    ):
        if value is not None and value != n:
            out.append(f"{key}={value} but the data has data.num_classes={n} classes (background included)")
    if net.get("in_channels") is not None and net["in_channels"] != dm.in_channels:
        out.append(f"model.net.in_channels={net['in_channels']} but the data has {dm.in_channels} channel(s)")
    return out


def _check_ranges(cfg: DictConfig, dm: Any) -> list[str]:
    out = []
    if dm.spacing is not None and not (np.isfinite(dm.spacing).all() and min(dm.spacing) > 0):
        out.append(f"data.spacing={list(dm.spacing)} must be 3 positive finite numbers (mm)")
    elif getattr(dm, "largest_resampled", None):
        from medseg.data.io import WORKING_COPIES, gib, memory_budget

        voxels, case = dm.largest_resampled
        need = voxels * 4 * WORKING_COPIES * max(1, dm.in_channels or 1)
        if need > memory_budget():
            out.append(
                f"data.spacing={list(dm.spacing)} resamples case {case} to {voxels:.3g} voxels (about {gib(need)}), "
                f"more than the memory budget of {gib(memory_budget())} (MEDSEG_MEMORY_GB): choose a coarser spacing"
            )
    if not 0.0 <= dm.pos_fraction <= 1.0:
        out.append(f"data.pos_fraction={dm.pos_fraction} must be in [0, 1]")
    if not 0.0 < dm.val_fraction < 1.0:
        out.append(f"data.val_fraction={dm.val_fraction} must be in (0, 1)")
    trainer = cfg.get("trainer") or {}
    for key in ("max_epochs", "check_val_every_n_epoch"):
        value = trainer.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            out.append(f"trainer.{key}={value} must be a positive integer")
    model = cfg.model
    overlap = model.get("overlap")
    if overlap is not None and not 0.0 <= overlap < 1.0:
        out.append(f"model.overlap={overlap} must be in [0, 1)")
    if model.get("sw_batch_size") is not None and model.sw_batch_size < 1:
        out.append(f"model.sw_batch_size={model.sw_batch_size} must be at least 1")
    lr = (model.get("optimizer") or {}).get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr > 0):
        out.append(f"model.optimizer.lr={lr} must be a positive number")
    return out


RESUME_KEYS = ("model.net", "data.root", "data.spacing", "data.modality", "data.num_classes", "data.in_channels")


def check_resume(cfg: DictConfig, run: RunDir) -> None:
    """Before the data are read: the run dir holds no run of another network or dataset (keys that are derived
    from the data later, left ``null`` in ``cfg``, are compared after preparation by :func:`validate_config`)."""
    problems = _check_resume(cfg, run, skip_derived=True)
    if problems:
        raise ConfigError(f"invalid configuration: {problems[0]}")


def _check_resume(cfg: DictConfig, run: RunDir, skip_derived: bool = False) -> list[str]:
    """A run dir that will be resumed must hold a run of the same network, data and preprocessing (else its checkpoint
    does not fit, or its saved config and metrics would be overwritten by a run that does not describe them)."""
    saved_path, run_dir = run.config, run.path
    if not cfg.get("resume", True) and (run.best_checkpoint.is_file() or run.last_checkpoint.is_file()):
        return [
            f"resume=false but hydra.run.dir={run_dir} already holds a run ({run.describe_state()}): use a new "
            "hydra.run.dir, or delete that folder to start over there"
        ]
    if not (run.last_checkpoint.is_file() and saved_path.is_file()):
        return []
    try:
        saved = load_yaml(saved_path)
    except ConfigRefused as err:  # a damaged or hostile YAML file
        return [f"cannot read the saved config of the run to resume: {err}"]
    diffs = []
    for key in RESUME_KEYS:
        old, new = _plain(OmegaConf.select(saved, key)), _plain(OmegaConf.select(cfg, key))
        if skip_derived and (new is None or key.startswith("model.net")):
            continue  # filled in from the data (the network's channels and classes) during preparation
        if key == "data.root" and isinstance(old, str) and isinstance(new, str):  # configs before paths were absolute
            old, new = str(Path(old).expanduser().absolute()), str(Path(new).expanduser().absolute())
        diffs += [f"{k}: {a!r} → {b!r}" for k, a, b in _differences(old, new, key)]
    if not diffs:
        return []
    shown = "; ".join(diffs[:5]) + (f"; … ({len(diffs) - 5} more)" if len(diffs) > 5 else "")
    return [
        f"hydra.run.dir={run_dir} holds a run with a different network, dataset or preprocessing ({shown}). "
        "Resuming needs the same settings: use a new hydra.run.dir, or delete that folder to start over there"
    ]


def _differences(old: Any, new: Any, path: str) -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}")
        return out
    return [] if old == new else [(path, old, new)]


SPECIAL_KEYS = {"_target_", "_partial_", "_args_", "_convert_", "_recursive_"}


def check_constructor_keys(cfg: Any) -> list[str]:
    """Keys of instantiated nodes that their ``_target_`` does not take (``+trainer.max_epoch=3`` would only fail
    as a ``TypeError`` once training starts), each with the nearest argument it does take."""
    import difflib
    import inspect

    from hydra._internal.utils import _locate

    problems: list[str] = []
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    for path, node in _instantiated_nodes(plain, ""):
        target = node["_target_"]
        try:
            params = inspect.signature(_locate(target)).parameters
        except Exception:  # noqa: BLE001 - not importable or no signature: building it reports the problem
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        for key in node:
            if key in SPECIAL_KEYS or key in params:
                continue
            close = difflib.get_close_matches(str(key), list(params), n=1, cutoff=0.5)
            hint = f"; did you mean {path}.{close[0]}?" if close else f" (it takes: {', '.join(params)})"
            problems.append(f"{path}.{key}: {target} takes no argument {key!r}{hint}")
    return problems


def _instantiated_nodes(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.append((path or "<root>", node))
        for key, value in node.items():
            found += _instantiated_nodes(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _instantiated_nodes(value, f"{path}[{i}]")
    return found
