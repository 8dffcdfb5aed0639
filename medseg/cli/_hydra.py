"""The Hydra commands (``train``, ``cv``, ``turbolift``): our own ``--help``, a pre-flight check of the overrides
before Hydra creates anything, then Hydra runs the task (multirun, launchers, ``--cfg job`` all work as usual)."""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.cli._output import describe, fail, out

HYDRA_FLAGS = ("--cfg", "-c", "--info", "-i", "--hydra-help", "--run", "-r", "--shell-completion", "-sc")


def strip_quotes(value: str) -> str:
    """``'a b'`` → ``a b`` (Hydra's quoted override values)."""
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value


def run(command: str, args: list[str], task: Callable[[Any], None], help_text: str) -> int:
    """``medseg <command> [overrides]``: print ``help_text`` for ``-h``/``--help``, check, then hand over to Hydra."""
    if any(a in ("-h", "--help") for a in args):
        out.print(help_text, markup=False, highlight=False)
        return 0
    if not any(a in HYDRA_FLAGS or a.startswith("--cfg=") for a in args):
        unwritable = check_run_dirs(args)
        if unwritable:
            return fail(command, unwritable)  # exit 1: the machine, not the command line
        problems = preflight(command, args)
        if problems:
            for problem in problems:
                fail(command, problem)
            return 2  # a usage error, like argparse's
    import hydra

    from medseg.config import config_dir

    # Keep argv[0] (Lightning's DDP launcher re-runs it for ranks > 0) and remember the command for those ranks.
    os.environ["MEDSEG_COMMAND"] = command
    sys.argv = [sys.argv[0], *args]
    hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")(task)()
    return 0


def check_run_dirs(args: list[str]) -> str | None:
    """An unwritable ``hydra.run.dir``/``hydra.sweep.dir``: one clear line now rather than Hydra's traceback later."""
    from medseg.validate import check_creatable

    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in ("hydra.run.dir", "hydra.sweep.dir"):
            try:
                check_creatable(strip_quotes(value), key)
            except OSError as err:
                return describe(err)
    return None


def preflight(command: str, args: list[str]) -> list[str]:
    """Problems of the overrides found before anything is created: an unknown config key (with the nearest known
    one), a key that the class it configures does not take. Empty when all is well (or not checkable here)."""
    from hydra._internal.utils import get_args_parser

    from medseg.validate import check_constructor_keys

    try:
        ns = get_args_parser().parse_args(args)
    except SystemExit:
        return []  # Hydra reports its own usage errors
    if ns.multirun or ns.config_name or ns.config_path:
        return []  # sweeps (a=1,2) and other primary configs are Hydra's to expand
    overrides = list(ns.overrides)
    if ns.config_dir:
        overrides = [f"hydra.searchpath=[file://{Path(ns.config_dir).expanduser().absolute()}]", *overrides]
    cfg, problem = _compose(command, overrides)
    if problem is not None:
        return [problem]
    return check_constructor_keys(cfg) if cfg is not None else []


def _compose(command: str, overrides: list[str]) -> tuple[Any, str | None]:
    """The composed config, or the reason it cannot be composed (``did you mean ...?`` for unknown keys)."""
    from hydra.errors import ConfigCompositionException, HydraException
    from omegaconf.errors import OmegaConfBaseException

    from medseg.config import compose_config

    plain = [o for o in overrides if not o.startswith("hydra.") or o.startswith("hydra.searchpath=")]
    try:
        return compose_config(command, plain), None
    except (ConfigCompositionException, HydraException, OmegaConfBaseException) as err:
        text = " ".join(str(err).split())
        match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
        if match is None:
            return None, text
        return None, _unknown_key(command, plain, match.group(1))


def _unknown_key(command: str, overrides: list[str], key: str) -> str:
    """``trainer.max_epoch: no such key; did you mean trainer.max_epochs?``"""
    from omegaconf import DictConfig, OmegaConf

    from medseg.config import compose_config

    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    parent_key, _, leaf = key.rpartition(".")
    try:
        base = compose_config(command, others)
    except Exception:  # noqa: BLE001 - another override is broken too: report this one plainly
        return f"{key}: no such config key (prefix it with + to add a new key)"
    parent = OmegaConf.select(base, parent_key) if parent_key else base
    known = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
    close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.5)
    where = parent_key or "the top level"
    if close:
        full = f"{parent_key}.{close[0]}" if parent_key else close[0]
        return f"{key}: no such config key; did you mean {full}? (see `medseg {command} --cfg job`)"
    return (
        f"{key}: no such config key in {where} (keys there: {', '.join(sorted(known)[:20])}); "
        f"`medseg {command} --cfg job` prints the whole config"
    )
