"""The walkthrough notebooks (notebooks/*.ipynb) are stored clean and execute with their figures.

Each notebook runs top to bottom with nbclient in a kernel of the current interpreter, in fast mode
(``MEDSEG_NOTEBOOK_FAST=1``: tiny epochs/folds), the way a user runs it: an empty HOME (so the default cache
``~/.cache/medseg`` is new), no ``MEDSEG_CACHE``/``MEDSEG_RUNS``/``MEDSEG_NOTEBOOK_DIR``, its working folder as cwd
(runs go to ``runs/`` there, as the notebooks say); the executed notebook is kept in memory only. real_data.ipynb
gets a small stand-in for the nilearn wheel
(``MEDSEG_NILEARN_WHEEL``, tests/fake_nilearn.py) instead of downloading the real one, so no test needs the network.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fake_nilearn import fake_nilearn_wheel

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
# notebook → number of figures (image/png outputs) it must produce
FIGURES = {"quickstart.ipynb": 4, "turbolift.ipynb": 2, "real_data.ipynb": 2}
CELL_TIMEOUT_S = 600  # one cell: a whole training/CV/Turbolift run in fast mode on a busy 2-core CPU


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_notebooks_are_listed() -> None:
    assert sorted(p.name for p in _notebooks()) == sorted(FIGURES)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code"
        and (cell.get("outputs") or cell.get("execution_count") is not None or "execution" in cell.get("metadata", {}))
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} hold outputs or execution counts; clear them "
        f"(Jupyter: Edit → Clear All Outputs; or jupyter nbconvert --clear-output --inplace)"
    )


def _kernel_spec(root: Path) -> str:
    """A kernelspec that starts ipykernel with this interpreter (not whatever `python3` kernel is installed)."""
    folder = root / "kernels" / "medseg-test"
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "medseg test",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    return "medseg-test"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient  # the `test` extra installs nbclient, nbformat and ipykernel
    import nbformat
    from nbclient.exceptions import CellExecutionError

    work = tmp_path / "work"
    work.mkdir()
    kernel = _kernel_spec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MEDSEG_NOTEBOOK_FAST", "1")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the default cache ~/.cache/medseg, new
    for var in ("MEDSEG_CACHE", "MEDSEG_RUNS", "MEDSEG_NOTEBOOK_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MEDSEG_NILEARN_WHEEL", str(fake_nilearn_wheel(tmp_path / "nilearn-0.0-py3-none-any.whl")))
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    repo_files_before = sorted(NOTEBOOK_DIR.rglob("*"))
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=180,
        resources={"metadata": {"path": str(work)}},  # the kernel's cwd
    )
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{name} failed:\n{err}", pytrace=False)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == FIGURES[name], f"{name}: {len(pngs)} figures, expected {FIGURES[name]}"
    assert all(len(o["data"]["image/png"]) > 1000 for o in pngs)  # base64 of a real picture, not an empty canvas
    assert sorted(NOTEBOOK_DIR.rglob("*")) == repo_files_before, "a notebook wrote into the repository"
    assert (home / ".cache" / "medseg").is_dir() and (work / "runs").is_dir()  # it ran with the defaults
