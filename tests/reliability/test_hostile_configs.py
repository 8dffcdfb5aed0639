"""A shared run directory is data: hostile ``config.yaml`` files are refused by ``medseg predict`` and ``medseg export``
with one line naming the key, and a marker file proves that nothing they name ran.

Each payload, if built, would create ``MARKER`` (the positive control builds one with ``--trust`` and sees it).
"""

from __future__ import annotations

import base64
import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from medseg import cli
from medseg.run_dir import FINISHED, RunDir

MODULE = "medseg.training.module.SegmentationModule"
LOSS = "{_target_: monai.losses.DiceCELoss, to_onehot_y: true, softmax: true}"


class _Touch:
    """Unpickling this creates the marker (what an inline pickle inside a config would do)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _pickle_b64(marker: Path) -> str:
    buf = io.BytesIO()
    torch.save({"x": _Touch(str(marker))}, buf)
    return base64.b64encode(buf.getvalue()).decode()


def _net(payload: str) -> str:
    return f"model:\n  _target_: {MODULE}\n  num_classes: 2\n  loss: {LOSS}\n  net:\n{payload}\n"


def corpus(marker: Path) -> dict[str, tuple[str, str]]:
    """name → (config.yaml text, what the one-line error must name)."""
    m = str(marker)
    return {
        "os.system": (_net(f"    _target_: os.system\n    _args_: ['touch {m}']"), "model.net._target_='os.system'"),
        "torch.load inline pickle (!!binary)": (
            _net(f"    _target_: torch.load\n    f: !!binary {_pickle_b64(marker)}"),
            "model.net.f: YAML tag tag:yaml.org,2002:binary",
        ),
        "torch.load with BytesIO": (
            _net("    _target_: torch.load\n    f: {_target_: torch.serialization.io.BytesIO}\n    weights_only: no"),
            "model.net._target_='torch.load'",
        ),
        "module attribute chain torch.os.mkdir": (
            _net(f"    _target_: torch.os.mkdir\n    path: {m}"),
            "model.net._target_='torch.os.mkdir'",
        ),
        "medseg.cli.os.system": (
            _net(f"    _target_: medseg.cli.os.system\n    _args_: ['touch {m}']"),
            "model.net._target_='medseg.cli.os.system'",
        ),
        "chain through an allowed class": (
            _net("    _target_: medseg.nets.UNet.__init__.__globals__.torch.os.system\n    _args_: ['x']"),
            "model.net._target_='medseg.nets.UNet.__init__",
        ),
        "builtins.exec": (
            _net(f'    _target_: builtins.exec\n    _args_: [\'open("{m}", "w")\']'),
            "model.net._target_='builtins.exec'",
        ),
        "subprocess.run": (
            _net(f"    _target_: subprocess.run\n    _args_: [[touch, {m}]]"),
            "model.net._target_='subprocess.run'",
        ),
        "importlib.import_module": (
            _net("    _target_: importlib.import_module\n    _args_: [antigravity]"),
            "model.net._target_='importlib.import_module'",
        ),
        "functools.partial": (
            _net(f"    _target_: functools.partial\n    _args_: [{{_target_: os.makedirs, _partial_: true}}, {m}]"),
            "model.net._target_='functools.partial'",
        ),
        "nested _partial_ block": (
            _net(
                "    _target_: medseg.nets.UNet\n    encoder_block:\n"
                f"      _target_: pathlib.Path.touch\n      _partial_: true\n      self: {m}"
            ),
            "model.net.encoder_block._target_='pathlib.Path.touch'",
        ),
        "_args_ holding a target": (
            _net(f"    _target_: medseg.nets.UNet\n    _args_: [{{_target_: os.makedirs, name: {m}}}]"),
            "model.net._args_[0]._target_='os.makedirs'",
        ),
        "target in a list": (
            _net(f"    _target_: medseg.nets.UNet\n    level_blocks:\n      - {{_target_: os.makedirs, name: {m}}}"),
            "model.net.level_blocks[0]._target_='os.makedirs'",
        ),
        "callbacks list": (
            _net("    _target_: medseg.nets.UNet") + f"callbacks:\n  evil: {{_target_: os.makedirs, name: {m}}}\n",
            "callbacks.evil._target_='os.makedirs'",
        ),
        "interpolation building the target": (
            _net(f"    _target_: ${{evil}}\n    name: {m}") + "evil: os.makedirs\n",
            "model.net._target_: interpolation '${evil}'",
        ),
        "interpolation assembling a name": (
            _net(f"    _target_: o${{s}}.makedirs\n    name: {m}") + "s: s\n",
            "model.net._target_: interpolation 'o${s}.makedirs'",
        ),
        "resolver oc.create": (
            _net(f'    _target_: medseg.nets.UNet\n    act: "${{oc.create:{{_target_: os.mkdir, path: {m}}}}}"'),
            "model.net.act: interpolation",
        ),
        "environment resolver": (_net("    _target_: medseg.nets.UNet\n    act: ${oc.env:HOME}"), "model.net.act"),
        "!!python/object/apply": (
            _net(f"    _target_: medseg.nets.UNet\n    act: !!python/object/apply:os.system ['touch {m}']"),
            "model.net.act: YAML tag tag:yaml.org,2002:python/object/apply:os.system",
        ),
        "!!python/name": (_net("    _target_: !!python/name:os.system ''"), "model.net._target_: YAML tag"),
        "custom tag": (_net("    _target_: medseg.nets.UNet\n    act: !evil relu"), "model.net.act: YAML tag !evil"),
        "anchor and alias bomb": (
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n" + _net("    _target_: medseg.nets.UNet"),
            "a: YAML anchors (&a)",
        ),
        "merge key": (
            "base: &base {_target_: os.makedirs}\n" + _net(f"    <<: *base\n    name: {m}"),
            "base: YAML anchors",
        ),
        "non-string target": (_net("    _target_: [os, system]"), "model.net._target_=['os', 'system']"),
        "torch.hub.load": (
            _net("    _target_: torch.hub.load\n    repo_or_dir: attacker/repo\n    model: x"),
            "model.net._target_='torch.hub.load'",
        ),
        "numpy.load with pickles": (
            _net(f"    _target_: numpy.load\n    file: {m}\n    allow_pickle: true"),
            "model.net._target_='numpy.load'",
        ),
        "allowed name plus whitespace": (
            _net("    _target_: 'medseg.nets.UNet '"),
            "model.net._target_='medseg.nets.UNet '",
        ),
        "malformed YAML": ("model: {net: [\n", "not valid YAML"),
        "not UTF-8": ("model: \udcff\n", "not a UTF-8 text file"),
    }


def _run_dir(root: Path, text: str) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_bytes(text.encode("utf-8", "surrogateescape"))
    prep = {"roi_size": [16, 16, 16], "spacing": [2, 2, 2], "modality": "MRI", "num_classes": 2, "in_channels": 1}
    (run / "preprocessing.json").write_text(json.dumps(prep))
    torch.save({"state_dict": {}, "epoch": 0}, run / "checkpoints" / "best.ckpt")
    RunDir(run).mark(FINISHED)
    return run


def _medseg(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        cli.main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(corpus(Path("/m"))))
@pytest.mark.parametrize("command", ["predict", "export"])
def test_hostile_config_is_refused_and_nothing_runs(name, command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    text, names = corpus(marker)[name]
    run = _run_dir(tmp_path, text)
    image = tmp_path / "in" / "img.nii.gz"
    image.parent.mkdir()
    image.write_bytes(b"")
    if command == "predict":
        args = ["predict", "-m", str(run), "-i", str(image.parent), "-o", str(tmp_path / "out")]
    else:
        args = ["export", "-m", str(run), "--format", "torchscript", "-o", str(tmp_path / "model.pt")]
    code, err = _medseg(args, capsys)
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert str(run / "config.yaml") in lines[0] and names in lines[0], lines[0]
    assert "Traceback" not in err
    assert not marker.exists(), f"{name}: the payload ran"
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "out" / "img.nii.gz").exists()


def test_positive_control_trust_builds_what_the_config_names(tmp_path, capsys, monkeypatch):
    """Without the guard the payloads do run: ``--trust`` builds the nested target and the marker appears."""
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    payload = f"    _target_: medseg.nets.UNet\n    _args_: [{{_target_: os.makedirs, name: {marker}}}]"
    run = _run_dir(tmp_path, _net(payload))
    code, _ = _medseg(["export", "-m", str(run), "--format", "torchscript", "--trust"], capsys)
    assert marker.is_dir()  # the build itself then fails (the payload is no network)
    assert code == 1


def test_pickle_in_the_corpus_is_live(tmp_path):
    """The inline pickle really executes when loaded the unsafe way (so refusing its tag matters)."""
    marker = tmp_path / "MARKER"
    data = base64.b64decode(_pickle_b64(marker))
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        torch.load(io.BytesIO(data), weights_only=True)


def test_real_run_configs_pass(tmp_path):
    """Every shipped network config, composed and resolved as a run stores it, passes the guard."""
    from medseg.config import compose_config, config_dir, resolved_yaml
    from medseg.safe_config import load_run_config

    nets = sorted(p.stem for p in (config_dir() / "model" / "net").glob("*.yaml"))
    for net in nets:
        for name in ("train", "turbolift"):
            cfg = compose_config(name, [f"model/net={net}", "data.root=/data"], run_dir=tmp_path / net)
            path = tmp_path / f"{name}_{net}.yaml"
            path.write_text(resolved_yaml(cfg))
            load_run_config(path)
    for logger in ("csv", "tensorboard", "mlflow"):
        cfg = compose_config("train", [f"logger={logger}"], run_dir=tmp_path / logger)
        (tmp_path / "l.yaml").write_text(resolved_yaml(cfg))
        load_run_config(tmp_path / "l.yaml")
