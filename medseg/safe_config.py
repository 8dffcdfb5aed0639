"""A run directory's ``config.yaml`` is data, never code.

Sharing a trained model folder is normal, so opening one must be as safe as ``torch.load(..., weights_only=True)``:

* :func:`load_yaml` reads YAML with no tags (``!!binary``, ``!!python/...``, ``!custom``), anchors or aliases, and
  refuses anything else with one line naming the key;
* :func:`check_targets` resolves nothing and imports nothing: every ``_target_`` string anywhere in the config (nested
  ``_partial_`` nodes, ``_args_`` lists, list items) must be *exactly* one of the names in :func:`allowed_targets` —
  medseg's own networks, blocks, losses, data module and training classes, and a fixed list of MONAI / PyTorch /
  Lightning constructors that configs use. ``torch.load``, ``torch.os.mkdir``, ``builtins.exec``, ``functools``,
  ``os``, ``subprocess``, ``importlib``, attribute chains and interpolations that build a target string are refused.

``--trust`` (``medseg predict``/``export``) lifts the allowlist and the interpolation ban for configs you wrote
yourself; the YAML rules hold always. The security model is described in ``docs/reliability.md``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

MAX_CONFIG_BYTES = 4 * 2**20  # a run's config.yaml is a few KB

# Third-party constructors a medseg config may name (module → class names). Functions are never listed.
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "torch.optim": ("SGD", "Adam", "AdamW", "RAdam", "NAdam", "Adamax", "Adagrad", "Adadelta", "RMSprop"),
    "torch.optim.lr_scheduler": (
        "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "StepLR", "MultiStepLR",
        "ExponentialLR", "LinearLR", "ConstantLR", "OneCycleLR", "ReduceLROnPlateau",
    ),
    "torch.nn": ("CrossEntropyLoss", "BCEWithLogitsLoss", "NLLLoss"),
    "monai.losses": (
        "DiceLoss", "DiceCELoss", "DiceFocalLoss", "FocalLoss", "TverskyLoss", "GeneralizedDiceLoss",
        "GeneralizedDiceFocalLoss", "GeneralizedWassersteinDiceLoss", "DeepSupervisionLoss",
    ),
    "monai.networks.nets": (
        "UNet", "BasicUNet", "AttentionUnet", "DynUNet", "SegResNet", "UNETR", "SwinUNETR", "VNet",
    ),
    "lightning.pytorch": ("Trainer",),
    "lightning.pytorch.callbacks": (
        "ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "RichProgressBar", "TQDMProgressBar",
        "RichModelSummary", "ModelSummary", "Timer",
    ),
    "lightning.pytorch.loggers": ("CSVLogger", "TensorBoardLogger", "MLFlowLogger"),
}  # fmt: skip

# medseg modules whose own classes (defined in medseg, not imported from elsewhere) may be built.
MEDSEG_MODULES = (
    "medseg.nets",
    "medseg.blocks",
    "medseg.training.module",
    "medseg.training.losses",
    "medseg.training.callbacks",
    "medseg.training.safe_io",
    "medseg.training.loggers",
    "medseg.data.datamodule",
)


class ConfigRefused(ValueError):
    """A config file that medseg will not build from: one line naming the file, the key and the reason."""


@functools.cache
def allowed_targets() -> frozenset[str]:
    """Every ``_target_`` string a config from an untrusted run directory may name."""
    names: set[str] = set()
    for module_name, classes in THIRD_PARTY.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        names.update(f"{module_name}.{c}" for c in classes if inspect.isclass(getattr(module, c, None)))
    for module in _medseg_modules():
        home = module.__name__ if hasattr(module, "__path__") else None  # a package re-exports its submodules'
        for attr, obj in vars(module).items():
            if not inspect.isclass(obj) or attr.startswith("_"):
                continue
            if obj.__module__.startswith(f"{home}.") if home else obj.__module__ == module.__name__:
                names.add(f"{module.__name__}.{attr}")  # the re-export a config uses (medseg.blocks.DoubleConv)
                names.add(f"{obj.__module__}.{obj.__qualname__}")  # and where it is defined
    return frozenset(names)


def _medseg_modules() -> list[Any]:
    out = []
    for name in MEDSEG_MODULES:
        module = importlib.import_module(name)
        out.append(module)
        if hasattr(module, "__path__"):  # a package: its submodules too (our own code, imported anyway)
            out += [importlib.import_module(f"{name}.{m.name}") for m in pkgutil.iter_modules(module.__path__)]
    return out


def load_yaml(path: str | Path) -> DictConfig:
    """A config file as a ``DictConfig``, refusing YAML tags, anchors/aliases, oversized and unparsable files.

    Raises:
        ConfigRefused: one line naming the file (and the key where there is one).
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigRefused(f"{path}: {path.stat().st_size} bytes is far larger than any config (refused)")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigRefused(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise ConfigRefused(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    _check_events(text, path)
    try:
        cfg = OmegaConf.create(text)
    except Exception as err:  # noqa: BLE001 - malformed YAML, duplicate keys, unsupported values
        raise ConfigRefused(f"{path}: not a valid config ({' '.join(str(err).split())[:300]})") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigRefused(f"{path}: expected a mapping at the top level, got a list")
    return cfg


def _check_events(text: str, path: Path) -> None:
    """Walk the YAML event stream (nothing is constructed) and refuse tags, anchors and aliases by key."""
    stack: list[list[Any]] = []  # per open collection: [kind, key or index, expecting_key]
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigRefused(f"{path}: {_where(stack)}: YAML aliases (*{event.anchor}) are not allowed")
            if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                is_key = bool(stack) and stack[-1][0] == "map" and stack[-1][2]
                if event.tag is not None:
                    raise ConfigRefused(f"{path}: {_where(stack)}: YAML tag {event.tag} is not allowed in a run config")
                if event.anchor is not None:
                    raise ConfigRefused(f"{path}: {_where(stack)}: YAML anchors (&{event.anchor}) are not allowed")
                if is_key:
                    if not isinstance(event, yaml.ScalarEvent):
                        raise ConfigRefused(f"{path}: {_where(stack)}: a mapping key must be a plain value")
                    stack[-1][1], stack[-1][2] = event.value, False
                    continue
                if isinstance(event, yaml.CollectionStartEvent):
                    is_map = isinstance(event, yaml.MappingStartEvent)
                    stack.append(["map", None, True] if is_map else ["seq", 0, False])
                    continue
                _advance(stack)
            elif isinstance(event, yaml.CollectionEndEvent):
                stack.pop()
                _advance(stack)
    except ConfigRefused:
        raise
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigRefused(f"{path}: not valid YAML ({' '.join(str(err).split())[:300]})") from None


def _advance(stack: list[list[Any]]) -> None:
    """A value was completed in the innermost collection: a mapping expects its next key, a list its next item."""
    if not stack:
        return
    if stack[-1][0] == "map":
        stack[-1][2] = True
    else:
        stack[-1][1] += 1


def _where(stack: list[list[Any]]) -> str:
    parts = []
    for kind, key, _ in stack:
        if kind == "seq":
            parts.append(f"[{key}]")
        elif key is not None:
            parts.append(f".{key}")
    return "".join(parts).lstrip(".") or "<top level>"


def check_targets(cfg: Any, source: str | Path) -> None:
    """Refuse a config that names a ``_target_`` outside :func:`allowed_targets` or holds an interpolation.

    Nothing is imported or resolved: a target must be one of the allowed names, character for character. Run
    directories store resolved configs, so an interpolation (``${...}``, which could assemble a target or call a
    resolver) is refused too.

    Raises:
        ConfigRefused: one line naming ``source`` and the first offending key.
    """
    plain = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    hint = "(a run directory is data: only medseg's and a fixed list of MONAI/torch/Lightning classes are built; "
    hint += "pass --trust if you wrote this config yourself)"
    for key, value in _walk(plain, ""):
        if isinstance(value, str) and "${" in value:
            raise ConfigRefused(f"{source}: {key}: interpolation {value!r} is not allowed in a run config {hint}")
        is_target = key.rsplit(".", 1)[-1] == "_target_"
        if is_target and (not isinstance(value, str) or value not in allowed_targets()):
            raise ConfigRefused(f"{source}: {key}={value!r} is not an allowed constructor {hint}")


def _walk(node: Any, path: str) -> Any:
    """``(dotted key, value)`` of every entry, keys included (a key can hold an interpolation too)."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "${" in key:
                yield sub, key
            if isinstance(value, (dict, list)):
                if key == "_target_":
                    yield sub, value  # a non-string target
                yield from _walk(value, sub)
            else:
                yield sub, value
    elif isinstance(node, list):
        for i, value in enumerate(node):
            sub = f"{path}[{i}]"
            if isinstance(value, (dict, list)):
                yield from _walk(value, sub)
            else:
                yield sub, value


def load_run_config(path: str | Path, trust: bool = False) -> DictConfig:
    """A run directory's ``config.yaml``, checked for building: :func:`load_yaml`, then (unless ``trust``)
    :func:`check_targets`."""
    cfg = load_yaml(path)
    if not trust:
        check_targets(cfg, path)
    return cfg
