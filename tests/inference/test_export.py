"""``medseg export``: torch.export (pt2) and TorchScript always, ONNX when onnxruntime is installed; parity with PyTorch
≤ 1e-4 (fp32); no deprecation or tracer warnings reach the user."""

from __future__ import annotations

import builtins
import json
import shutil
from pathlib import Path

import pytest
import torch

from medseg.cli import main
from medseg.export import TOLERANCE, ExportError, export_run


@pytest.mark.parametrize("dims", ["3d", "2d"])
def test_torchscript_export_matches_pytorch(trained_runs: dict[str, Path], tmp_path: Path, dims: str) -> None:
    out = tmp_path / "net.pt"
    report = export_run(trained_runs[dims], "torchscript", out)
    assert out.is_file() and report["parity"]["passed"]
    assert report["parity"]["max_abs_diff"] <= TOLERANCE
    on_disk = json.loads(Path(f"{out}.json").read_text())
    assert on_disk["parity"] == report["parity"] and on_disk["format"] == "torchscript"
    patch = [16, 16, 16] if dims == "3d" else [32, 32]
    assert report["input_shape"] == ["batch", 1, *patch] and report["output_shape"] == ["batch", 3, *patch]
    loaded = torch.jit.load(str(out))
    assert loaded(torch.zeros(3, 1, *patch)).shape == (3, 3, *patch)  # any batch size


@pytest.mark.parametrize("dims", ["3d", "2d"])
def test_torch_export_program_matches_pytorch_for_any_batch(trained_runs, tmp_path, dims) -> None:
    import warnings

    out = tmp_path / "net.pt2"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_run(trained_runs[dims], "pt2", out)
    assert report["parity"]["passed"] and report["format"] == "pt2"
    shown = [str(w.message)[:80] for w in caught if issubclass(w.category, (DeprecationWarning, UserWarning))]
    assert not [m for m in shown if "jit" in m or "complete tensor" in m or "trace" in m.lower()], shown
    patch = [16, 16, 16] if dims == "3d" else [32, 32]
    module = torch.export.load(str(out)).module()
    for batch in (1, 5):
        assert module(torch.zeros(batch, 1, *patch)).shape == (batch, 3, *patch)


def test_torchscript_export_shows_no_deprecation_or_tracer_warnings(trained_runs, tmp_path) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_run(trained_runs["3d"], "torchscript", tmp_path / "net.pt")
    noisy = [w for w in caught if issubclass(w.category, (DeprecationWarning, torch.jit.TracerWarning))]
    assert not noisy, [str(w.message)[:100] for w in noisy]


def test_onnx_export_matches_pytorch(trained_runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnxruntime as ort

    run = tmp_path / "run"
    shutil.copytree(trained_runs["3d"], run)
    report = export_run(run, "onnx")  # default location: the run dir
    out = run / "model.onnx"
    assert report["file"] == str(out) and out.is_file() and Path(f"{out}.json").is_file()
    assert report["parity"]["passed"] and report["parity"]["max_abs_diff"] <= TOLERANCE
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.run(None, {"image": torch.zeros(3, 1, 16, 16, 16).numpy()})[0].shape == (3, 3, 16, 16, 16)


def test_onnx_without_the_optional_packages_is_a_clear_error(trained_runs, tmp_path, monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_onnx(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if name.split(".")[0] in ("onnx", "onnxruntime", "onnxscript"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ExportError, match=r"pip install 'medseg\[export\]'"):
        export_run(trained_runs["3d"], "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(SystemExit) as err:
        main(["export", "-m", str(trained_runs["3d"]), "--format", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert err.value.code == 1
    assert "medseg[export]" in " ".join(capsys.readouterr().err.split())


def test_export_command(trained_runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "model.pt"
    main(["export", "-m", str(trained_runs["2d"]), "--format", "torchscript", "-o", str(out)])  # exit 0: no raise
    text = " ".join(capsys.readouterr().out.split())
    assert "max |Δlogits|" in text and out.is_file()
    with pytest.raises(SystemExit) as err:
        main(["export", "-m", str(tmp_path), "--format", "torchscript"])  # not a run dir
    assert err.value.code == 1
    assert "neither a train run" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit) as err:
        main(["export", "-m", str(trained_runs["2d"]), "--format", "tflite"])
    assert err.value.code == 2
