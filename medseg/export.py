"""``medseg export``: a trained run's network as a ``torch.export`` program (``pt2``), ONNX or TorchScript, checked
against PyTorch.

``pt2`` and ONNX come from ``torch.export`` (ONNX through the dynamo exporter); TorchScript (``torch.jit.trace``,
deprecated by PyTorch) stays for consumers that need it. Only the network is exported (eval mode, logits out;
deep-supervision heads are inactive in eval mode). The input is the training patch: ``(B, in_channels, *roi)`` for
3D runs, ``(B, in_channels, H, W)`` for 2D runs, with the batch dimension dynamic. Preprocessing (reorientation,
resampling to ``spacing``, normalisation) and the sliding window are not part of the graph: ``preprocessing.json``
of the run lists them and is copied into the report.

The parity check runs the exported file (``torch.export.load`` / ONNX Runtime / ``torch.jit.load`` on the CPU) and
the PyTorch network on a fresh random input of the patch size (batch 3, the export saw batch 2) and compares the
logits: max |Δ| ≤ 1e-4 in float32. The report is printed and written as JSON beside the export (``<file>.json``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.fileio import atomic_path, atomic_write_json

TOLERANCE = 1e-4
FORMATS = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}
ONNX_HINT = "ONNX export needs the optional packages onnx, onnxruntime and onnxscript: pip install 'medseg[export]'"


class ExportError(ValueError):
    """A run cannot be exported (missing optional package, bad run dir, failed parity)."""


def _example_input(prep: dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    roi = [int(r) for r in prep["roi_size"]]
    spatial = roi[:2] if int(prep.get("spatial_dims", 3)) == 2 else roi
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, int(prep["in_channels"]), *spatial, generator=gen)


def _atomic(out: Path, write: Callable[[str], None]) -> None:
    with atomic_path(out, out.suffix) as tmp:
        write(str(tmp))


def _batch_dim() -> Any:
    return torch.export.Dim("batch", min=1, max=1024)


def _pt2(net: torch.nn.Module, example: torch.Tensor, out: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.export``: an ExportedProgram with a dynamic batch, loadable without medseg (``torch.export.load``)."""
    with torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes=({0: _batch_dim()},))
    with warnings.catch_warnings():  # "No complete tensor found in the group": channels-last weights; parity checks
        warnings.filterwarnings("ignore", message=".*complete tensor.*")
        _atomic(out, lambda tmp: torch.export.save(program, tmp))
        loaded = torch.export.load(str(out)).module()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    return run


def _torchscript(net: torch.nn.Module, example: torch.Tensor, out: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """TorchScript for consumers that need it (C++ ``torch::jit::load``). PyTorch deprecates ``torch.jit`` in favour
    of ``torch.export`` (``--format pt2``); its warnings are silenced here because the parity check below is what
    tells whether the trace is right (shape-dependent branches are fixed to the patch size, the documented input)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(net, example, check_trace=False)
        _atomic(out, lambda tmp: torch.jit.save(traced, tmp))
        loaded = torch.jit.load(str(out), map_location="cpu").eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    return run


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise ExportError(f"{ONNX_HINT} ({err})") from None


def _onnx(net: torch.nn.Module, example: torch.Tensor, out: Path, opset: int | None) -> Callable[[torch.Tensor], Any]:
    _require_onnx()
    import onnxruntime as ort

    batch = _batch_dim()

    def write(tmp: str) -> None:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (example,),
                tmp,
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                external_data=False,
                dynamo=True,
                verbose=False,
            )

    _atomic(out, write)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    checkpoint: str = "best",
    trust: bool = False,
    opset: int | None = None,
) -> dict[str, Any]:
    """Export the network of ``run_dir`` to ``out`` (default ``<run_dir>/model.pt`` / ``model.onnx``), check parity
    and write the report to ``<out>.json``. Returns the report; raises ``ExportError`` when parity fails."""
    from medseg.inference.predictor import load_module
    from medseg.run_dir import trained_runs

    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {sorted(FORMATS)}, got {fmt!r}")
    runs = trained_runs(run_dir)  # a finished train run (refusing unfinished ones, like predict)
    if len(runs) != 1:
        raise ExportError(f"-m {run_dir}: a CV run of {len(runs)} folds; export one of them (-m {runs[0].path})")
    rundir = runs[0]
    run_dir = rundir.path
    if fmt == "onnx":
        _require_onnx()
    prep = rundir.preprocessing_info()
    path = Path(out).expanduser() if out else run_dir / f"model{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    net = load_module(run_dir, checkpoint, trust).net.float().eval()
    example = _example_input(prep, batch=2, seed=0)  # batch 2: torch.export specialises a batch of 1 to a constant
    writers = {"pt2": _pt2, "torchscript": _torchscript}
    run = writers[fmt](net, example, path) if fmt in writers else _onnx(net, example, path, opset)
    check = _example_input(prep, batch=3, seed=1)  # fresh values and another batch size than the export
    with torch.no_grad():
        expected = net(check)
    assert isinstance(expected, torch.Tensor), "the network must return one tensor in eval mode"
    diff = float((run(check).float() - expected.float()).abs().max())
    report = {
        "format": fmt,
        "file": str(path),
        "run_dir": str(run_dir),
        "checkpoint": checkpoint,
        **_shapes(prep, check, expected),
        "parity": {"max_abs_diff": diff, "tolerance": TOLERANCE, "passed": bool(diff <= TOLERANCE)},
        "preprocessing": {k: prep.get(k) for k in ("spacing", "modality", "intensity_stats", "roi_size")},
        "versions": _versions(fmt),
    }
    atomic_write_json(Path(f"{path}.json"), report)
    if not np.isfinite(diff) or diff > TOLERANCE:
        raise ExportError(f"{path}: parity check failed, max |Δlogits| = {diff:.3g} > {TOLERANCE:g} (see {path}.json)")
    return report


def _shapes(prep: dict[str, Any], check: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    return {
        "input_name": "image",
        "output_name": "logits",
        "input_shape": ["batch", *list(check.shape[1:])],
        "output_shape": ["batch", *list(expected.shape[1:])],
        "parity_input_shape": list(check.shape),
        "spatial_dims": int(prep.get("spatial_dims", 3)),
        "num_classes": int(prep["num_classes"]),
    }


def _versions(fmt: str) -> dict[str, str]:
    versions = {"torch": str(torch.__version__)}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return versions
