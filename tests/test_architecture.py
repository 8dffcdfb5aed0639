"""The package's structure, as docs/architecture.md states it: no import cycle, the command line only in
``medseg/cli/``, and the run directory's file names only in ``medseg/run_dir.py`` (computed with ``ast``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from medseg.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "medseg"


def _modules() -> dict[str, Path]:
    """``medseg.x.y`` → file, for every module of the package (configs are YAML, not modules)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The medseg modules ``name`` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in MODULES:  # `from pkg import name`: the module, else the package
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = _imports(name, path)
        # importing a submodule runs its package's __init__: an implicit edge we do not count (it is not a choice)
        graph[name] = {e for e in edges if not name.startswith(f"{e}.")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) > 60 and graph["medseg.cli.predict"], "the graph was not read"
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _top_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("library", ["argparse", "rich"])
def test_only_the_command_line_package_parses_arguments_and_prints(library):
    offenders = [
        str(path.relative_to(REPO))
        for name, path in MODULES.items()
        if not name.startswith("medseg.cli") and library in _top_imports(path)
    ]
    assert not offenders, f"{library} imported outside medseg/cli/: {offenders}"


def _run_dir_names() -> set[str]:
    run = RunDir("/r")
    names: set[str] = set()
    for attr in dir(RunDir):
        value = getattr(run, attr, None) if not attr.startswith("_") else None
        if isinstance(value, Path) and value != run.path:
            names.add(value.relative_to(run.path).parts[0] if value.parent != run.path else value.name)
            names.add(value.name)
    names.add(run.checkpoint("best").name)
    names.add(run.checkpoint("last").name)
    return names


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_only_run_dir_spells_the_run_directory_file_names():
    names = _run_dir_names()
    assert {"config.yaml", "metrics.json", "last.ckpt", "best.ckpt", "cv_summary.json", "checkpoints"} <= names
    offenders = []
    for path in MODULES.values():
        if path.name == "run_dir.py":
            continue
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                words = set(node.value.replace(",", " ").replace("(", " ").replace(")", " ").replace("/", " ").split())
                hits = sorted(n for n in names if n in words and "." in n)
                if hits:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {hits}")
    assert not offenders, offenders


def test_docstrings_point_to_the_architecture_page_in_the_repo():
    assert (REPO / "docs" / "architecture.md").is_file()
    stale = [str(p.relative_to(REPO)) for p in [*PACKAGE.rglob("*.py"), *(REPO / "kernels").rglob("*.py")]
             if "ARCHITECTURE.md" in p.read_text()]  # fmt: skip
    assert not stale, f"docstrings point to an ARCHITECTURE.md that is not in the repo: {stale}"
