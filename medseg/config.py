"""Config helpers: where the packaged configs live, composing them outside Hydra's CLI, instantiation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict


def config_dir() -> Path:
    """The configs shipped with the package (works for editable and regular installs)."""
    import medseg.configs

    return Path(next(iter(medseg.configs.__path__))).resolve()


def compose_config(
    name: str = "train", overrides: list[str] | None = None, run_dir: str | Path | None = None
) -> DictConfig:
    """Compose a config like the CLI would (for tests, notebooks and workflows calling each other).

    ``run_dir`` plays the role of ``hydra.run.dir`` (it sets ``paths.output_dir``). The keys the overrides set are
    added to ``plan.keep`` (a plan never changes them), as the command line does.
    """
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides or []))
    record_overrides(cfg, overrides or [])
    if run_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(Path(run_dir).resolve())
    return cfg


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with plain Python containers (no ListConfig leaks into modules)."""
    return instantiate(node, _convert_="all", **kwargs)


def resolved_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return OmegaConf.to_yaml(OmegaConf.create(plain))


PATH_KEYS = ("data.root", "data.cache_dir", "paths.cache_dir", "paths.runs_dir", "init_from", "cv.splits_file")


def absolute_paths(cfg: DictConfig) -> None:
    """Expand ``~`` and make the path keys absolute in place, so a saved ``config.yaml`` names the same files from
    any working directory and for any reader (a notebook does not expand ``~``). Symlinks are kept as written."""
    with open_dict(cfg):
        for key in PATH_KEYS:
            value = OmegaConf.select(cfg, key, default=None)
            if isinstance(value, str) and value:
                OmegaConf.update(cfg, key, str(Path(value).expanduser().absolute()), merge=False)


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys that ``key=value`` overrides set (``+``/``++`` prefixes dropped; group choices such as
    ``data=nifti`` or ``model/net=unet``, deletions ``~key`` and ``hydra.*`` are left out)."""
    keys = []
    for item in overrides:
        key, sep, _ = str(item).partition("=")
        key = key.lstrip("+")
        if sep and "." in key and "/" not in key and not key.startswith(("~", "hydra.")):
            keys.append(key)
    return keys


def record_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Add the keys ``overrides`` set to ``plan.keep`` (configs with a ``plan`` node: train, cv, turbolift)."""
    if OmegaConf.select(cfg, "plan") is None:
        return
    keep = [str(k) for k in (OmegaConf.select(cfg, "plan.keep") or [])]
    with open_dict(cfg):
        cfg.plan.keep = list(dict.fromkeys([*keep, *override_keys(overrides)]))
