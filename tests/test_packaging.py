from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _config_packages() -> set[str]:
    dirs = [CONFIGS, *(p for p in CONFIGS.rglob("*") if p.is_dir() and p.name != "__pycache__")]
    return {".".join(["medseg", "configs", *d.relative_to(CONFIGS).parts]) for d in dirs}


def test_config_tree_is_non_trivial():
    pkgs = _config_packages()
    assert {"medseg.configs", "medseg.configs.model.net", "medseg.configs.model.net.skip_gate"} <= pkgs
    assert len(list(CONFIGS.rglob("*.yaml"))) >= 10


def test_every_config_dir_is_a_listed_package(pyproject):
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    missing = sorted(_config_packages() - listed)
    assert missing == [], f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_configs_ship_as_package_data(pyproject):
    setuptools = pyproject["tool"]["setuptools"]
    assert setuptools["package-dir"]["medseg.configs"] == "configs"
    patterns = setuptools["package-data"]["medseg.configs"]
    assert any(p in ("**/*.yaml", "*.yaml") for p in patterns)
    listed = set(setuptools["packages"])
    for yaml in CONFIGS.rglob("*.yaml"):  # each YAML's folder is a package whose data includes *.yaml
        pkg = ".".join(["medseg", "configs", *yaml.parent.relative_to(CONFIGS).parts])
        assert pkg in listed, yaml


def test_listed_config_packages_exist(pyproject):
    for pkg in pyproject["tool"]["setuptools"]["packages"]:
        if pkg.startswith("medseg.configs"):
            assert (CONFIGS.joinpath(*pkg.split(".")[2:])).is_dir(), pkg


def test_console_script(pyproject):
    assert pyproject["project"]["scripts"]["medseg"] == "medseg.cli:main"
