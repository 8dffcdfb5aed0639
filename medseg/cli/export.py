"""``medseg export``: a trained run's network as TorchScript or ONNX, with a parity check."""

from __future__ import annotations

import argparse

from rich.markup import escape

from medseg.cli._output import describe, fail, out

SUMMARY = "torch.export / ONNX / TorchScript export + parity check"
USAGE = "medseg export -m RUN_DIR --format pt2|onnx|torchscript [-o FILE]"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medseg export", description="Export a trained network with a parity check.")
    p.add_argument("-m", "--model", required=True, metavar="RUN_DIR", help="train run dir (or one fold_<k> of a CV)")
    p.add_argument(
        "--format",
        required=True,
        choices=["pt2", "onnx", "torchscript"],
        help="pt2 (torch.export, .pt2), onnx (.onnx) or torchscript (.pt; torch.jit is deprecated by PyTorch)",
    )
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="default: RUN_DIR/model.pt2, .onnx or .pt")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--trust", action="store_true", help="build config targets outside the allowlist (your own runs)")
    return p


def run(argv: list[str]) -> int:
    """Run ``medseg export``; returns the exit code (1 on any error, parity failure included)."""
    from medseg.export import export_run

    args = parser().parse_args(argv)
    try:
        report = export_run(args.model, args.format, args.output, args.checkpoint, args.trust, args.opset)
    except (ValueError, OSError) as error:
        return fail("export", describe(error))
    parity = report["parity"]
    out.print(
        f"exported {escape(report['file'])} ({report['format']}, input {report['input_shape']}); parity vs PyTorch: "
        f"max |Δlogits| = {parity['max_abs_diff']:.3g} ≤ {parity['tolerance']:g} → report {escape(report['file'])}.json"
    )
    return 0
