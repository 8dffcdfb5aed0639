"""Faults during training and at the edges of a run: hard kills, NaN losses, full disks, unwritable or reused run
directories, invalid configs — and static checks of the security rules (weights_only loads, no shell, checked
targets)."""

from __future__ import annotations

import ast
import errno
import hashlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_train_overrides

from medseg import cli
from medseg.cli import train as cli_train
from medseg.config import compose_config
from medseg.training import module as module_mod
from medseg.training.safe_io import AtomicCheckpointIO, ResumableCSVLogger
from medseg.validate import ConfigError, check_writable
from medseg.workflows.train import prepare, train

REPO = Path(__file__).resolve().parents[2]


def _overrides(root: Path, epochs: int, every: int = 1) -> list[str]:
    return tiny_train_overrides(root, epochs, every)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _medseg() -> list[str]:
    exe = Path(sys.executable).parent / "medseg"
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "from medseg.cli import main; main()"]


# ------------------------------------------------------------------------------------------------ hard kill + resume
KILL_EPOCHS = 16


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_finishes_all_epochs(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = [*_medseg(), "train", f"hydra.run.dir={run}", *_overrides(tiny_dataset, KILL_EPOCHS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    last = run / "checkpoints" / "last.ckpt"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 240
            while not last.is_file() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert last.is_file(), (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.3)  # the next epoch is under way (an epoch takes ~0.2-0.4 s here)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "metrics.json").exists()  # it was killed mid-training, not after
    before = _load(last)  # the checkpoint on disk after the kill is whole (atomic writes)
    assert 1 <= before["epoch"] + 1 < KILL_EPOCHS
    _load(run / "checkpoints" / "best.ckpt")
    rows_before = (run / "logs" / "metrics.csv").read_text().splitlines()
    assert len(rows_before) > 1  # header + rows of the epochs before the kill

    proc2 = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0, proc2.stdout[-3000:] + proc2.stderr[-3000:]
    assert "resuming from" in proc2.stdout + proc2.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == KILL_EPOCHS
    assert _load(last)["epoch"] == KILL_EPOCHS - 1
    rows = (run / "logs" / "metrics.csv").read_text().splitlines()
    assert rows[: len(rows_before)] == rows_before  # the log of the killed run is kept, the resumed run appends
    assert not list((run / "checkpoints").glob(".*.tmp"))


# ------------------------------------------------------------------------------- NaN loss, finished and reused run dirs
def test_nan_loss_stops_clearly_and_keeps_checkpoints_finished_run_is_not_retrained(
    tiny_dataset, tmp_path, monkeypatch, capsys, caplog
):
    run = tmp_path / "run"
    cfg = compose_config("train", _overrides(tiny_dataset, 2), run_dir=run)
    train(cfg)
    ckpts = {name: _sha(run / "checkpoints" / name) for name in ("last.ckpt", "best.ckpt")}

    # re-running a finished run: nothing retrained, nothing overwritten silently
    with caplog.at_level(logging.WARNING, logger="medseg.workflows.train"):
        metrics = train(compose_config("train", _overrides(tiny_dataset, 2), run_dir=run))
    assert metrics["epochs"] == 2
    assert any("finished (2 epochs): nothing is retrained" in r.getMessage() for r in caplog.records)
    assert {name: _sha(run / "checkpoints" / name) for name in ckpts} == ckpts

    # a NaN loss in epoch 3 stops the run with a clear message; the checkpoints of epoch 2 are untouched
    real = module_mod.with_deep_supervision

    def nan_loss(*args, **kwargs):
        loss = real(*args, **kwargs)
        loss.register_forward_hook(lambda mod, inputs, out: out * float("nan"))
        return loss

    monkeypatch.setattr(module_mod, "with_deep_supervision", nan_loss)
    with pytest.raises(SystemExit) as exit_info:
        cli_train.task(compose_config("train", _overrides(tiny_dataset, 4), run_dir=run))
    assert exit_info.value.code == 1
    err = "".join(capsys.readouterr().err.split())  # the console wraps lines, even inside a path
    assert "medsegtrain:error:non-finitetraininglossnanatepoch2" in err, err
    assert f"{run / 'checkpoints' / 'last.ckpt'}(afterepoch2)isintact" in err, err
    assert {name: _sha(run / "checkpoints" / name) for name in ckpts} == ckpts
    assert _load(run / "checkpoints" / "last.ckpt")["epoch"] == 1
    monkeypatch.undo()

    # resuming with another network is refused before anything in the run dir is overwritten
    config_sha = _sha(run / "config.yaml")
    other = compose_config("train", [*_overrides(tiny_dataset, 4), "model.net.channels=[4,8,16]"], run_dir=run)
    with pytest.raises(
        ConfigError, match=r"holds a run with a different network, dataset or prep.*model\.net\.channels: \[8, 16, 32\]"
    ):
        train(other)
    assert _sha(run / "config.yaml") == config_sha


# ------------------------------------------------------------------------------------------- atomic checkpoint files
def _state(value: float) -> dict:
    return {"epoch": 1, "state_dict": {"net.w": torch.full((64, 64), value)}}


def test_checkpoint_write_failure_keeps_the_previous_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint(_state(1.0), path)
    good = _sha(path)
    (path.parent / ".last.ckpt.stale.tmp").write_bytes(b"left by a killed writer")
    big = {"epoch": 2, "state_dict": {"net.w": torch.ones(512, 512)}}  # ~1 MB
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # a "full disk" after 100 kB
    try:
        with pytest.raises(OSError) as err:
            io.save_checkpoint(big, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert f"cannot save checkpoint {path}" in str(err.value) and "the previous last.ckpt" in str(err.value)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.EFBIG
    assert _sha(path) == good and _load(path)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary files left
    assert (path.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_checkpoint_with_nan_weights_is_refused_and_loads_are_weights_only(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_state(1.0), path)
    with pytest.raises(FloatingPointError, match="parameter 'net.w' holds NaN/Inf"):
        io.save_checkpoint(_state(float("nan")), path)
    assert io.load_checkpoint(path)["state_dict"]["net.w"].eq(1).all()
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _Payload()}, evil)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        io.load_checkpoint(evil)


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_resumable_csv_logger_appends(tmp_path):
    for step in range(2):
        logger = ResumableCSVLogger(save_dir=str(tmp_path), name="logs", version="")
        logger.log_metrics({"train_loss": 1.0 - step}, step=step)
        logger.log_metrics({"val_dice": 0.5 + step}, step=step)
        logger.save()
    rows = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,train_loss,val_dice" and len(rows) == 5, rows


# --------------------------------------------------------------------------------------- run dirs and config errors
def test_unwritable_run_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"hydra\.run\.dir=.*a_file/run: not writable \((File exists|Not a directory)"):
        check_writable(blocker / "run")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", f"hydra.run.dir={blocker / 'run'}"])
    assert exit_info.value.code == 1
    err = "".join(capsys.readouterr().err.split())  # the console wraps lines, even inside a path
    assert f"medsegtrain:error:hydra.run.dir={blocker / 'run'}:notwritable(NotADirectoryError" in err, err


def test_invalid_config_values_fail_fast_naming_every_key(tiny_dataset, tmp_path):
    bad = [
        *_overrides(tiny_dataset, 2),
        "data.patch_size=[18,16,12]",  # not divisible by 2**2
        "model.net.norm=batchy",
        "model.net.act=[relu,{nope:1}]",
        "model.net.out_channels=2",
        "model.optimizer.lr=0",
        "model.overlap=1.5",
    ]
    cfg = compose_config("train", bad, run_dir=tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        prepare(cfg, tmp_path / "run")
    text = str(err.value)
    for part in (
        "data.patch_size=[18, 16, 12] must be divisible by 2**2=4 (model.net.channels has 3 levels): "
        "e.g. data.patch_size=[20, 16, 12]",
        "model.net.norm='batchy': unknown normalisation 'batchy'; names: batch, group, instance",
        "model.net.act=['relu', {'nope': 1}]: not a valid activation (TypeError",
        "model.net.out_channels=2 but the data has data.num_classes=3 classes",
        "model.optimizer.lr=0 must be a positive number",
        "model.overlap=1.5 must be in [0, 1)",
    ):
        assert part in text, f"{part!r} not in\n{text}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.net.spatial_dims=2", "data.spatial_dims=3"], "model.net.spatial_dims=2 but data.spatial_dims=3"),
        (["data.num_classes=2"], "data.num_classes=2 but the labels have 3 classes (values [0, 1, 2]"),
        (["data.spacing=[2.0,-1.0,2.0]"], "data.spacing must be 3 positive numbers"),
        (["data.patch_size_2d=[30,32]", "model.net.spatial_dims=2"], "data.patch_size_2d=[30, 32] must be divisible"),
    ],
)
def test_config_error_names_the_key(tiny_dataset, tmp_path, overrides, message):
    cfg = compose_config("train", [*_overrides(tiny_dataset, 1), *overrides], run_dir=tmp_path / "run")
    with pytest.raises(Exception) as err:  # noqa: B017 - ValueError, or Hydra's InstantiationException wrapping it
        prepare(cfg, tmp_path / "run")
    assert message in str(err.value)


# ---------------------------------------------------------------------------------------------- static security rules
def _python_files() -> list[Path]:
    return [p for d in ("medseg", "kernels", "scripts") for p in sorted((REPO / d).rglob("*.py"))]


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(func: ast.expr) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_every_torch_load_is_weights_only():
    offenders = []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text())):
            if _name(call.func) == "torch.load":
                kw = {k.arg: k.value for k in call.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_no_shell_commands_built_from_strings():
    offenders = []
    for path in _python_files():
        for call in _calls(ast.parse(path.read_text())):
            name = _name(call.func)
            shell = any(
                k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                for k in call.keywords
            )
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput") or shell:
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno} {name}")
            elif (
                name.startswith("subprocess.") and call.args and isinstance(call.args[0], (ast.Constant, ast.JoinedStr))
            ):
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno} {name} with a command string")
    assert not offenders, offenders


def test_configs_on_disk_are_read_only_through_the_safe_loader():
    """No module reads a YAML file with OmegaConf/yaml directly: ``medseg.safe_config`` (tag-free loader + target
    allowlist) is the only reader of config files from run directories."""
    offenders = []
    for path in sorted((REPO / "medseg").rglob("*.py")):
        if path.name == "safe_config.py":
            continue
        names = {_name(c.func) for c in _calls(ast.parse(path.read_text()))}
        bad = names & {"OmegaConf.load", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.safe_load"}
        if bad:
            offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert not offenders, offenders


def test_check_targets_refuses_foreign_targets():
    from medseg.safe_config import ConfigRefused, check_targets

    with pytest.raises(ConfigRefused, match=r"model\.net\._target_='os\.system'"):
        check_targets({"model": {"net": {"_target_": "os.system", "_args_": ["rm -rf ~"]}}}, "config.yaml")
    check_targets({"model": {"net": {"_target_": "medseg.nets.UNet"}}}, "config.yaml")
