"""``medseg predict``: segment files or folders with a trained run, a CV ensemble or a Turbolift run."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from medseg.data.io import atomic_write_json, is_image_file, strip_suffix
from medseg.inference.cases import list_cases, resolve_runs

console = Console(stderr=True, soft_wrap=True)


def predict_parser() -> argparse.ArgumentParser:
    """Options of ``medseg predict``."""
    p = argparse.ArgumentParser(prog="medseg predict", description="Segment volumes; outputs overlay the inputs.")
    p.add_argument("-m", "--model", required=True, metavar="RUN_DIR", help="train run, CV run or Turbolift run")
    p.add_argument("-i", "--input", required=True, metavar="FILE_OR_DIR", help="image file or folder")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (not the input folder)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
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
    p.add_argument("--trust", action="store_true", help="allow config targets outside medseg/monai/torch/lightning")
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


def _out_name(case: str, first_input: str, fmt: str | None) -> str:
    suffix = "." + fmt.lstrip(".") if fmt else Path(first_input).name[len(strip_suffix(Path(first_input).name)) :]
    return case + suffix


def _postprocess(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Keep the largest 26-connected component of each foreground class; the rest becomes background.

    scipy (a dependency) rather than MONAI's KeepLargestConnectedComponent, which needs scikit-image on the CPU;
    each class is labelled inside its bounding box only.
    """
    from scipy import ndimage

    out = labels.copy()
    for c in range(1, num_classes):
        mask = labels == c
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box or box[0] is None:
            continue
        sub = mask[box[0]]
        components, n = ndimage.label(sub, structure=np.ones((3,) * sub.ndim))
        if n > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            out[box[0]][sub & (components != sizes.argmax())] = 0
    return out


def _predict_case(predictor: Any, case: str, files: list[str], out: Path, args: argparse.Namespace) -> str:
    from medseg.inference.writer import write_like

    start = time.time()
    labels, probs = predictor.predict(files, probabilities=args.save_probabilities)
    if args.lcc:
        labels = _postprocess(labels, predictor.num_classes)
    write_like(labels, files[0], out)
    if probs is not None:
        tmp = out.parent / f".{case}_probabilities.tmp.npz"
        try:
            np.savez_compressed(tmp, probabilities=probs)
            tmp.replace(out.parent / f"{case}_probabilities.npz")
        finally:
            tmp.unlink(missing_ok=True)
    return f"{time.time() - start:.1f} s"


class _Preview:
    """What the ``--preview`` PNGs need besides a case: reference labels by case name, class names by value."""

    def __init__(self, labels_dir: str | None, runs: list[Path]) -> None:
        self.labels: dict[str, Path] | None = None
        if labels_dir is not None:
            folder = Path(labels_dir).expanduser()
            if not folder.is_dir():
                raise ValueError(f"--preview-labels {folder}: not a folder")
            self.labels = {strip_suffix(f.name): f for f in sorted(folder.iterdir()) if is_image_file(f)}
        self.class_names: dict[int, str] = {}
        metrics = runs[0] / "metrics.json"
        if metrics.is_file():  # val_dice_per_class lists the foreground classes 1..n by name
            names = json.loads(metrics.read_text()).get("val_dice_per_class") or {}
            self.class_names = {i: str(n) for i, n in enumerate(names, start=1)}

    def write(self, case: str, image: str, prediction: Path) -> str:
        """Write ``<case>_preview.png`` beside the prediction; returns the note for the results table."""
        from medseg.viz import save_overlay

        label = self.labels.get(case) if self.labels is not None else None
        png = preview_path(prediction.parent, case)
        save_overlay(image, prediction, png, label=label, title=case, class_names=self.class_names)
        return "preview written" + (" (no label found)" if self.labels is not None and label is None else "")


def preview_path(out_dir: Path, case: str) -> Path:
    """Where ``--preview`` writes the overlay of ``case``."""
    return out_dir / f"{case}_preview.png"


def _run_case(predictor: Any, case: str, files: list[str], out: Path, args: Any, preview: _Preview | None) -> str:
    """Predict one case unless its output exists; the preview follows the prediction (missing ones are added)."""
    if out.exists() and not args.overwrite:
        status = "exists (skipped; --overwrite to redo)"
        draw = preview is not None and not preview_path(out.parent, case).exists()
    else:
        status = "ok " + _predict_case(predictor, case, files, out, args)
        draw = preview is not None
    if draw and preview is not None:
        try:
            status += "; " + preview.write(case, files[0], out)
        except Exception as err:  # noqa: BLE001 - reported in the table; the prediction itself is written
            status = f"FAILED: preview: {type(err).__name__}: {err} (prediction {status})"
    return status


def run_predict(argv: list[str]) -> int:
    """Run ``medseg predict``; returns the exit code (1 if any case failed)."""
    from medseg.inference.predictor import Predictor

    args = predict_parser().parse_args(argv)
    try:
        runs = resolve_runs(args.model, args.folds)
        out_dir = Path(args.output).expanduser().resolve()
        inp = Path(args.input).expanduser().resolve()
        if out_dir == (inp if inp.is_dir() else inp.parent):
            raise ValueError(f"-o {out_dir}: refusing to write into the input folder")
        budget = int(args.memory_budget * 2**30) if args.memory_budget else None
        predictor = Predictor(runs, args.device, args.checkpoint, tta=args.tta, trust=args.trust, memory_budget=budget)
        in_channels = int(json.loads((runs[0] / "preprocessing.json").read_text())["in_channels"])
        cases, rejected = list_cases(inp, in_channels)
        preview = _Preview(args.preview_labels, runs) if args.preview or args.preview_labels else None
    except (ValueError, OSError) as err:
        console.print(f"[bold red]medseg predict: error:[/] {escape(str(err))}")
        return 1
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, str] = {f: "skipped: cannot group into channels" for f in rejected}
    failed = len(rejected)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"predicting ({len(runs)} model(s))", total=len(cases))
        for case, files in cases:
            out = out_dir / _out_name(case, files[0], args.format)
            try:
                results[case] = _run_case(predictor, case, files, out, args, preview)
            except Exception as err:  # noqa: BLE001 - one bad case must not stop the batch
                results[case] = f"FAILED: {type(err).__name__}: {err}"
            failed += results[case].startswith("FAILED")
            progress.advance(task)
    _summary(results, out_dir, runs)
    return 1 if failed else 0


def _summary(results: dict[str, str], out_dir: Path, runs: list[Path]) -> None:
    table = Table(title=f"medseg predict → {out_dir}")
    table.add_column("case")
    table.add_column("result")
    for case, status in results.items():
        table.add_row(escape(case), escape(status) if status.startswith("ok") else f"[red]{escape(status)}[/]")
    Console().print(table)
    atomic_write_json(out_dir / "predict_summary.json", {"models": [str(r) for r in runs], "cases": results})
