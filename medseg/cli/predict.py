"""``medseg predict``: segment files or folders with a trained run, a CV ensemble or a Turbolift run."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medseg.cli._output import describe, err, fail, out

SUMMARY = "segment NIfTI/NRRD/MHA volumes"
USAGE = "medseg predict -m RUN_DIR -i FILE_OR_DIR -o OUT_DIR_OR_FILE"
EPILOG = """examples:
  medseg predict -m runs/demo -i scan.nii.gz -o seg.nii.gz
  medseg predict -m runs/cv5 -i scans/ -o preds/ --tta --preview
Outputs have the input's shape and geometry; existing outputs are skipped (--overwrite to redo)."""


def parser() -> argparse.ArgumentParser:
    """Options of ``medseg predict``."""
    p = argparse.ArgumentParser(
        prog="medseg predict",
        description="Segment volumes with a trained run (a train run, every fold of a CV run, or a Turbolift run's "
        "final stage); each output overlays its input exactly.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-m", "--model", required=True, metavar="RUN_DIR", help="train run, CV run or Turbolift run")
    p.add_argument("-i", "--input", required=True, metavar="FILE_OR_DIR", help="image file or folder")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output folder (not the input folder); for a single input file also a file name such as seg.nii.gz",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False, help="mirroring TTA (default off)")
    p.add_argument("--folds", type=int, nargs="+", default=None, help="CV folds to ensemble (default all)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>_probabilities.npz")
    p.add_argument("--format", default=None, help="output suffix, e.g. nii.gz (default: the input's)")
    p.add_argument("--lcc", action="store_true", help="keep the largest connected component of each class")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    p.add_argument(
        "--memory-budget",
        type=float,
        default=None,
        metavar="GB",
        help="network-space probabilities stay float32 up to this size, float16 beyond (default: 1/4 of the RAM)",
    )
    p.add_argument("--trust", action="store_true", help="build config targets outside the allowlist (your own runs)")
    p.add_argument(
        "--replace-nonfinite",
        type=float,
        default=None,
        metavar="VALUE",
        help="replace NaN/Inf input voxels by VALUE (default: refuse such inputs)",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write OUT_DIR/<case>_preview.png: axial/coronal/sagittal overlay of the prediction on the image",
    )
    p.add_argument(
        "--preview-labels",
        default=None,
        metavar="DIR",
        help="reference labels (<case>.nii.gz, ...) shown as an extra row of the previews; implies --preview",
    )
    return p


def run(argv: list[str]) -> int:
    """Run ``medseg predict``; returns the exit code (1 if any case failed)."""
    from medseg.inference.batch import BatchOptions, Preview, predict_cases, write_summary
    from medseg.inference.jobs import prepare_job
    from medseg.inference.predictor import Predictor

    args = parser().parse_args(argv)
    options = BatchOptions(
        fmt=args.format,
        lcc=args.lcc,
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        preview=bool(args.preview or args.preview_labels),
        preview_labels=args.preview_labels,
    )
    try:
        job = prepare_job(args.model, args.input, args.output, args.folds, options.fmt)
        budget = int(args.memory_budget * 2**30) if args.memory_budget else None
        predictor = Predictor(
            job.runs,
            args.device,
            args.checkpoint,
            tta=args.tta,
            trust=args.trust,
            memory_budget=budget,
            replace_nonfinite=args.replace_nonfinite,
        )
        preview = Preview(args.preview_labels, job.runs) if options.preview else None
    except (ValueError, OSError) as error:
        return fail("predict", describe(error))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task(f"predicting ({len(job.runs)} model(s))", total=len(job.cases))
        results = predict_cases(predictor, job.cases, options, preview, on_case=lambda *_: progress.advance(bar))
    results = {**job.rejected, **results}
    _table(results, job.out_dir)
    write_summary(job.out_dir, job.runs, results)
    return 1 if any(s.startswith(("FAILED", "skipped")) for s in results.values()) else 0


def _table(results: dict[str, str], out_dir: Path) -> None:
    table = Table(title=f"medseg predict → {out_dir}")
    table.add_column("case")
    table.add_column("result")
    for case, status in results.items():
        table.add_row(
            escape(case), escape(status) if status.startswith(("ok", "exists")) else f"[red]{escape(status)}[/]"
        )
    out.print(table)
