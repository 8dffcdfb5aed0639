"""The documentation is executable and complete.

* Every ``medseg`` line of a fenced ``bash`` block in README.md and docs/*.md parses: the command exists, its Hydra
  overrides compose (every config-group choice of a multirun sweep), argparse commands accept their options; every
  ``pip install`` extra exists.
* The quick start (README's "Quick start" section, then docs/quickstart.md) runs line by line, in order, in an empty
  folder with an empty HOME and no MEDSEG_* variables, i.e. as a new user would run it. Training commands get a tiny
  epoch/patch budget appended (``TINY``), the MNI152 script a small fake nilearn wheel instead of a download;
  ``ls``/``cat`` lines must name files that exist by then. Any other kind of line fails: teach this test to run it.
* The docs/extending.md walkthrough: its ``# file:`` blocks are written where they say and its commands run.
* README.md links every docs/*.md; every relative link and anchor in README.md and docs/*.md resolves.
* docs/cli.md names every command of ``medseg --help`` and every option of every argparse command (in the command's
  own section); docs/config.md names every config group and option file under configs/.

Commands run in-process through ``medseg.cli.main`` (a subprocess costs ~10 s of imports each on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
import tomllib
import torch
from fake_nilearn import fake_nilearn_wheel
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from medseg import cli
from medseg.config import build, config_dir

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
HYDRA_COMMANDS = ("train", "cv", "turbolift")
# Where the quick start lives: (file, "## section title" or None for the whole file), run in this order.
QUICKSTART = [(README, "Quick start"), (REPO / "docs" / "quickstart.md", None)]
# Appended to every train/cv/turbolift command that is run: a few seconds per run instead of minutes.
TINY = [
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "model.net.channels=[8,16,32]",
    "data.patch_size=[16,16,16]",
    "data.patch_size_2d=[32,32]",
    "data.spacing=[4,4,4]",
    "data.num_workers=0",
    "data.iters_per_epoch=2",  # a planned run (data=nifti) would run nnU-Net's 250
    "plan.time_step=false",
    "cv.folds=2",
    "callbacks.progress_bar=null",
    "+trainer.enable_progress_bar=false",
]
DATA_SHAPE = ["data.in_channels=1", "data.num_classes=3"]  # what the data would fill in
LAUNCHER_PLUGINS = {
    "basic": "hydra._internal.core_plugins.basic_launcher",
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


# ------------------------------------------------------------------------------------------------- reading the docs
def fenced(text: str, lang: str) -> list[str]:
    return [body for tag, body in FENCE.findall(text) if tag == lang]


def section(text: str, title: str | None) -> str:
    """The body of ``## title`` up to the next heading of level 1 or 2 (the whole text for None)."""
    if title is None:
        return text
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n(.*?)(?=^#{{1,2}} |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match.group(1)


def command_lines(block: str) -> list[list[str]]:
    """Shell words of each command line of a bash block (continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n[ \t]*", " ", block)
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


def split_chain(words: list[str]) -> list[list[str]]:
    """``a && b`` → ``[a, b]``; ``a &`` (in the background) → ``[a]``."""
    out: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", "&"):
            out.append([])
        else:
            out[-1].append(word)
    return [c for c in out if c]


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading ``VAR=value`` assignments and the command after them (``srun [options]`` dropped)."""
    env = {}
    while words and ENV_ASSIGNMENT.fullmatch(words[0]):
        key, _, value = words[0].partition("=")
        env[key] = value
        words = words[1:]
    if words[:1] == ["srun"]:
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    return env, words


def write_doc_files(text: str, folder: Path) -> list[str]:
    """Write the fenced blocks with a ``# file: PATH`` line in their leading comments to ``folder / PATH``."""
    written = []
    for _, body in FENCE.findall(text):
        header = [line for line in body.splitlines()[:3] if line.startswith("#")]  # `# @package` must come first
        match = next((m for line in header if (m := re.fullmatch(r"# file: (\S+)", line.strip()))), None)
        if match:
            path = folder / match.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
            written.append(match.group(1))
    return written


def expand_tilde(words: list[str]) -> list[str]:
    """The shell's tilde expansion at the start of a word (the only expansion the docs use)."""
    return [str(Path(w).expanduser()) if w == "~" or w.startswith("~/") else w for w in words]


def doc_commands(doc: Path) -> list[tuple[str, list[str]]]:
    """``(where, words)`` of every command in the bash blocks of ``doc`` (environment assignments dropped)."""
    out = []
    for block in fenced(doc.read_text(), "bash"):
        for words in command_lines(block):
            for command in split_chain(words):
                out.append((f"{doc.name}: {shlex.join(command)}", split_env(command)[1]))
    return out


def usage_commands() -> list[str]:
    """The commands listed by ``medseg --help``."""
    listing = cli.usage().split("commands:", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ parsing commands
class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace | None) -> None:
        super().__init__(parser.prog)
        self.parser, self.namespace = parser, namespace


@contextmanager
def stop_at_parse_args(parse: bool) -> Iterator[None]:
    """Make any ``ArgumentParser.parse_args`` raise ``_Parsed`` (after parsing for real when ``parse``)."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN202
        raise _Parsed(self, original(self, args, namespace) if parse else None)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args):
        yield


def argparse_command(args: list[str], parse: bool = True) -> _Parsed:
    """Run ``medseg *args`` up to its ``parse_args``: the parser and (when ``parse``) the parsed options."""
    try:
        with stop_at_parse_args(parse):
            cli.main(args)
    except _Parsed as parsed:
        return parsed
    except SystemExit as err:
        raise AssertionError(f"`medseg {shlex.join(args)}` is rejected (exit {err.code})") from None
    raise AssertionError(f"`medseg {shlex.join(args)}` never parsed its options with argparse")


def hydra_args(args: list[str]) -> argparse.Namespace:
    try:
        return get_args_parser().parse_args(args)
    except SystemExit:
        raise AssertionError(f"Hydra rejects the options of {args}") from None


def drop_missing_launcher(overrides: list[str]) -> list[str]:
    """``hydra/launcher=X`` (+ ``hydra.launcher.*``) needs X's plugin; without it installed, check the name only."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra/launcher=")]
    if not names:
        return overrides
    assert names[0] in LAUNCHER_PLUGINS, f"unknown Hydra launcher {names[0]!r}"
    try:
        if importlib.util.find_spec(LAUNCHER_PLUGINS[names[0]]) is not None:
            return overrides
    except ModuleNotFoundError:  # no hydra_plugins package at all
        pass
    return [o for o in overrides if not o.startswith(("hydra/launcher=", "hydra.launcher."))]


def _is_group(key: str) -> bool:
    key = key.lstrip("+~")
    return "/" in key or (config_dir() / key).is_dir() or key == "hydra"


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Jobs of a multirun sweep that cover every config-group choice (value sweeps: the first job is enough)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = BasicSweeper.split_arguments(parsed, None)[0]
    seen: set[str] = set()
    chosen = []
    for job in jobs:
        new = {o for o in job if _is_group(o.split("=", 1)[0])} - seen
        if new or not chosen:
            chosen.append(job)
            seen |= new
    return chosen


class Composer:
    """Composes many override lists: one composition per distinct set of config-group choices (the value overrides
    of all commands sharing it applied together, ~0.2 s each); each list alone only when the batch fails."""

    def __init__(self) -> None:
        self.batches: dict[tuple[str, str | None, tuple[str, ...]], list[tuple[str, list[str]]]] = {}

    def add(self, where: str, config_name: str, overrides: list[str], extra_dir: str | None = None) -> None:
        extra_dir = str(Path(extra_dir).resolve()) if extra_dir is not None else None
        groups = tuple(o for o in overrides if _is_group(o.split("=", 1)[0]))
        values = [o for o in overrides if o not in groups]
        self.batches.setdefault((config_name, extra_dir, groups), []).append((where, values))

    @staticmethod
    def _compose(config_name: str, extra_dir: str | None, overrides: list[str]) -> None:
        if extra_dir is not None:
            overrides = [f"hydra.searchpath=[file://{extra_dir}]", *overrides]
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            compose(config_name, overrides=overrides)

    def failures(self) -> list[str]:
        out = []
        for (name, extra_dir, groups), items in self.batches.items():
            merged = list(dict.fromkeys(v for _, values in items for v in values))
            try:
                self._compose(name, extra_dir, [*groups, *merged])
                continue
            except Exception:  # noqa: BLE001 - find out which command it was
                pass
            for where, values in items:
                try:
                    self._compose(name, extra_dir, [*groups, *values])
                except Exception as err:  # noqa: BLE001
                    out.append(f"{where}\n    {type(err).__name__}: {' '.join(str(err).split())[:400]}")
        return out


def check_medseg_command(args: list[str], composer: Composer, where: str) -> None:
    """Assert that ``medseg *args`` exists and parses; Hydra compositions are queued on ``composer``."""
    assert args, f"{where}: `medseg` without a command"
    command = args[0]
    if command in ("-h", "--help", "help"):
        return
    assert command in usage_commands(), f"{where}: no command {command!r} in `medseg --help`"
    if command == "cv" and args[1:2] == ["aggregate"]:
        assert len(args) == 3, f"{where}: `medseg cv aggregate` takes exactly one RUN_DIR"
    elif command in HYDRA_COMMANDS:
        ns = hydra_args(args[1:])
        overrides = drop_missing_launcher(ns.overrides)
        if ns.config_dir is not None:
            assert Path(ns.config_dir).is_dir(), f"{where}: --config-dir {ns.config_dir} does not exist"
        for job in sweep_jobs(overrides) if ns.multirun else [overrides]:
            composer.add(where, ns.config_name or command, job, ns.config_dir)
    else:
        parsed = argparse_command(args)
        if parsed.parser.prog == "medseg check-data":  # its data.root=PATH argument is checked after parsing
            from medseg.cli.check_data import _root_from

            try:
                _root_from(parsed.namespace.overrides, parsed.parser)
            except SystemExit:
                raise AssertionError(f"{where}: check-data rejects its arguments") from None


def check_pip_extras(words: list[str], where: str) -> None:
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for word in words[2:]:
        match = re.fullmatch(r"(?:\.|medseg)\[([\w,-]+)\]", word)
        if match:
            missing = set(match.group(1).split(",")) - extras
            assert not missing, f"{where}: no extra {sorted(missing)} in pyproject.toml"


def test_every_documented_medseg_command_parses(tmp_path, monkeypatch):
    composer = Composer()
    checked = 0
    for doc in [README, *DOCS]:
        if doc.name == "extending.md":  # run as written by its own test below
            continue
        folder = tmp_path / doc.stem  # the doc's `# file:` blocks (e.g. for --config-dir) in the current folder
        folder.mkdir()
        write_doc_files(doc.read_text(), folder)
        monkeypatch.chdir(folder)
        for where, words in doc_commands(doc):
            if words[:1] == ["medseg"]:
                check_medseg_command(words[1:], composer, where)
                checked += 1
            elif words[:2] == ["pip", "install"]:
                check_pip_extras(words, where)
    assert checked >= 20, "fewer medseg commands found in the docs than expected: is the extraction broken?"
    failures = composer.failures()
    assert not failures, "documented commands whose overrides do not compose:\n" + "\n".join(failures)


# ----------------------------------------------------------------------------------------------- running commands
class UserShell:
    """Runs documented command lines in-process, in ``work`` (the current folder), as a user would in a shell."""

    def __init__(self, work: Path, wheel: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
        self.work, self.wheel, self.monkeypatch, self.capsys = work, wheel, monkeypatch, capsys
        self.done: set[tuple[str, ...]] = set()
        self.composer = Composer()

    def run_block(self, block: str, where: str) -> None:
        for line in command_lines(block):
            assert not {"|", ";", "||"} & set(line), f"{where}: one command per line please: {line}"
            for words in split_chain(line):  # the README's quick start chains install && run
                self.run(words, where)

    def run(self, words: list[str], where: str) -> None:
        env, words = split_env(words)
        words = expand_tilde(words)
        if words[:2] == ["pip", "install"]:  # the test runs in the installed package; the extras must exist
            check_pip_extras(words, where)
            return
        if words[:3] == ["python", "-m", "pytest"]:  # not run inside pytest: it must be what CI runs
            ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
            assert shlex.join(words) in ci, f"{where}: `{shlex.join(words)}` is not the test command of .ci/run"
            return
        if tuple(words) in self.done:  # README's quick start repeats the first steps of docs/quickstart.md
            return
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
            if key == "PYTHONPATH":
                for entry in value.split(":"):
                    self.monkeypatch.syspath_prepend(str(Path(entry).resolve()))
        if words[0] == "medseg":
            self._medseg(words[1:], where)
        elif words[0] in ("ls", "cat"):
            missing = [w for w in words[1:] if not w.startswith("-") and not Path(w).exists()]
            assert not missing, f"{where}: `{shlex.join(words)}`: no such file {missing}"
        elif words[:2] == ["python", "scripts/prepare_mni152.py"]:
            self._prepare_mni152(words[2:], where)
        else:
            raise AssertionError(f"{where}: test_docs.py does not know how to run `{shlex.join(words)}`")
        self.done.add(tuple(words))

    def _medseg(self, args: list[str], where: str) -> None:
        check_medseg_command(args, self.composer, where)
        failures = self.composer.failures()
        self.composer = Composer()
        assert not failures, "\n".join(failures)
        if args and args[0] in HYDRA_COMMANDS and args[1:2] != ["aggregate"]:
            ns = hydra_args(args[1:])
            options = ["-m"] if ns.multirun else []
            for flag, value in (("--config-dir", ns.config_dir), ("--config-name", ns.config_name), ("--cfg", ns.cfg)):
                options += [flag, value] if value else []
            args = [args[0], *options, *ns.overrides, *TINY]
        GlobalHydra.instance().clear()
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            cli.main(args)
            code = 0
        except SystemExit as err:
            code = err.code or 0
        finally:  # Hydra's job logging and run state must not outlive the command
            root.handlers[:], root.level = handlers, level
            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
        out = self.capsys.readouterr()
        assert code == 0, f"{where}: `medseg {shlex.join(args)}` exited {code}:\n{(out.out + out.err)[-4000:]}"

    def _prepare_mni152(self, args: list[str], where: str) -> None:
        spec = importlib.util.spec_from_file_location("prepare_mni152", REPO / "scripts" / "prepare_mni152.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.parse_args(args)  # the documented options as written
        code = module.main([*args, "--wheel", str(self.wheel)])  # offline: a small template instead of a download
        self.capsys.readouterr()
        assert code == 0, f"{where}: prepare_mni152.py exited {code}"


@pytest.fixture
def shell(tmp_path, monkeypatch, capsys) -> UserShell:
    """A fresh user: empty HOME (so ~/.cache/medseg is new), no MEDSEG_* variables, an empty current folder."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    for var in ("MEDSEG_CACHE", "MEDSEG_RUNS", "MEDSEG_COMMAND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    return UserShell(work, fake_nilearn_wheel(tmp_path / "nilearn-0.0-py3-none-any.whl"), monkeypatch, capsys)


def test_quickstart_runs_as_written(shell):
    blocks = [
        (f"{path.name} {title or ''}".strip(), block)
        for path, title in QUICKSTART
        for block in fenced(section(path.read_text(), title), "bash")
    ]
    text = "\n".join(block for _, block in blocks)
    for needed in ("medseg train", "medseg cv", "medseg predict", "--preview", "prepare_mni152.py", "data=nifti"):
        assert needed in text, f"the quick start no longer shows {needed!r}"
    for where, block in blocks:
        shell.run_block(block, where)


def quickstart_commands() -> list[str]:
    """The command lines of the README's quick start as written (trailing comments and outer spaces dropped)."""
    lines = [
        line for block in fenced(section(README.read_text(), "Quick start"), "bash") for line in block.splitlines()
    ]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in lines if shlex.split(line, comments=True)]


def test_ci_runs_the_readme_quick_start_verbatim():
    """`.ci/run` runs the README's quick-start lines character for character, and installs nothing before them: CI
    installs and tests exactly what a new user following the README gets."""
    commands = quickstart_commands()
    assert commands[0].startswith("pip install -e . && medseg train"), commands
    assert any(c.endswith("&& python -m pytest -q") for c in commands), commands
    live = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines() if shlex.split(ln, comments=True)]
    at = []
    for command in commands:
        hits = [i for i, line in enumerate(live) if line == command or line.startswith(command + " ")]
        assert hits, f".ci/run does not run the README's `{command}` as written"
        at.append(hits[0])
    assert at == sorted(at), "the README's commands run in another order in .ci/run"
    installs = [ln for ln in live[: at[0]] if re.search(r"\bpip\b|\binstall\b", ln)]
    assert not installs, f".ci/run installs something before the README's commands: {installs}"


def test_extending_walkthrough_runs_as_written(shell):
    text = (REPO / "docs" / "extending.md").read_text()
    written = write_doc_files(text, shell.work)
    expected = {"my_blocks.py", "my_configs/model/net/encoder_block/ghost.yaml", "my_configs/model/net/ghost_unet.yaml"}
    assert expected <= set(written), written
    try:
        for block in fenced(text, "bash"):
            shell.run_block(block, "extending.md")
        # the walkthrough trains in 3D; the new block and network must work in 2D too (the contract): build and run
        for net in ("ghost_unet", "dilated_fcn"):
            search = f"hydra.searchpath=[file://{shell.work / 'my_configs'}]"
            with initialize_config_dir(str(config_dir()), version_base="1.3"):
                cfg = compose("train", [search, f"model/net={net}", "model.net.spatial_dims=2", *DATA_SHAPE])
            model = build(cfg.model.net)
            out = model(torch.randn(2, 1, 32, 32))  # (B, C_in, H, W)
            assert out.shape == (2, 3, 32, 32), (net, out.shape)
            out.mean().backward()
    finally:
        for name in ("my_blocks", "my_nets"):
            sys.modules.pop(name, None)
    assert (shell.work / "runs" / "ghost" / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------------- links and coverage
def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_readme_links_every_doc_and_all_links_resolve():
    readme_targets = {t.split("#")[0] for t in LINK.findall(README.read_text())}
    unlinked = [d.name for d in DOCS if f"docs/{d.name}" not in readme_targets]
    assert not unlinked, f"README.md does not link {unlinked}"
    broken = []
    for doc in [README, *DOCS]:
        for target in LINK.findall(FENCE.sub("", doc.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _command_section(text: str, command: str) -> str:
    match = re.search(rf"^## `medseg {re.escape(command)}`[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/cli.md has no '## `medseg {command}`' section"
    return match.group(1)


def test_cli_reference_covers_every_command_and_option():
    text = (REPO / "docs" / "cli.md").read_text()
    missing = []
    for command in usage_commands():
        body = _command_section(text, command)
        if command in HYDRA_COMMANDS:
            continue
        parser = argparse_command([command], parse=False).parser
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help") and not re.search(rf"`{re.escape(option)}(?![\w-])", body):
                    missing.append(f"medseg {command} {option}")
    assert "medseg cv aggregate" in _command_section(text, "cv")
    assert not missing, f"docs/cli.md does not document {missing}"


def test_config_reference_covers_every_group_and_option():
    text = (REPO / "docs" / "config.md").read_text()
    root = config_dir()
    missing = []
    for yaml in sorted(root.rglob("*.yaml")):
        group = yaml.parent.relative_to(root).as_posix()
        if group == ".":
            if f"configs/{yaml.name}" not in text:
                missing.append(f"configs/{yaml.name}")
            continue
        if f"`{group}" not in text:
            missing.append(f"group {group}")
        if f"`{yaml.stem}`" not in text:
            missing.append(f"{group}/{yaml.stem}")
    assert not missing, f"docs/config.md does not mention {missing}"
