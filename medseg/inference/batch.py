"""Segmenting many cases: output names, skipping finished outputs, one bad case never stopping the batch, the
probabilities and preview files beside each label map, and ``predict_summary.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import is_image_file, strip_suffix
from medseg.fileio import atomic_path, atomic_write_json, claim
from medseg.inference.postprocess import keep_largest_component
from medseg.run_dir import RunDir

SUMMARY = "predict_summary.json"


@dataclass
class BatchOptions:
    """What ``medseg predict`` does besides the network: output format, post-processing, extra files."""

    fmt: str | None = None
    lcc: bool = False
    save_probabilities: bool = False
    overwrite: bool = False
    preview: bool = False
    preview_labels: str | None = None


def output_name(case: str, first_input: str, fmt: str | None) -> str:
    """``<case>.<fmt>``, or the case with its input's suffix (``.nii.gz`` for a DICOM series)."""
    suffix = "." + fmt.lstrip(".") if fmt else Path(first_input).name[len(strip_suffix(Path(first_input).name)) :]
    return case + (suffix or ".nii.gz")  # a DICOM series (a folder) is written as NIfTI


def probabilities_path(out: Path, case: str) -> Path:
    return out.parent / f"{case}_probabilities.npz"


def preview_path(out_dir: Path, case: str) -> Path:
    """Where ``--preview`` writes the overlay of ``case``."""
    return out_dir / f"{case}_preview.png"


class Preview:
    """What the ``--preview`` PNGs need besides a case: reference labels by case name, class names by value."""

    def __init__(self, labels_dir: str | None, runs: Sequence[str | Path]) -> None:
        self.labels: dict[str, Path] | None = None
        if labels_dir is not None:
            folder = Path(labels_dir).expanduser()
            if not folder.is_dir():
                raise ValueError(f"--preview-labels {folder}: not a folder")
            self.labels = {strip_suffix(f.name): f for f in sorted(folder.iterdir()) if is_image_file(f)}
        self.class_names: dict[int, str] = {}
        run = RunDir(runs[0])
        if run.metrics.is_file():  # val_dice_per_class lists the foreground classes 1..n by name
            names = run.read_json(run.metrics).get("val_dice_per_class") or {}
            self.class_names = {i: str(n) for i, n in enumerate(names, start=1)}

    def write(self, case: str, image: str, prediction: Path) -> str:
        """Write ``<case>_preview.png`` beside the prediction; returns the note for the results table."""
        from medseg.viz import save_overlay

        label = self.labels.get(case) if self.labels is not None else None
        png = preview_path(prediction.parent, case)
        save_overlay(image, prediction, png, label=label, title=case, class_names=self.class_names)
        return "preview written" + (" (no label found)" if self.labels is not None and label is None else "")


def predict_case(predictor: Any, case: str, files: list[str], out: Path, options: BatchOptions) -> str:
    """Predict one case and write its label map (and probabilities); returns the status line."""
    from medseg.inference.writer import write_like

    start = time.time()
    labels, probs = predictor.predict(files, probabilities=options.save_probabilities)
    if options.lcc:
        labels = keep_largest_component(labels, predictor.num_classes)
    write_like(labels, files[0], out)
    if probs is not None:
        with atomic_path(probabilities_path(out, case), ".npz") as tmp:
            np.savez_compressed(tmp, probabilities=probs)
    return f"ok {time.time() - start:.1f} s"


def run_case(
    predictor: Any, case: str, files: list[str], out: Path, options: BatchOptions, preview: Preview | None
) -> str:
    """Predict one case unless its output exists; the preview follows the prediction (missing ones are added).

    While a case is written its output is claimed, so two ``medseg predict`` processes writing into one folder never
    pair one's label map with the other's probabilities."""
    with claim(out) as holder:
        if holder is not None:
            return f"skipped: being written by another medseg predict ({holder})"
        return _run_claimed(predictor, case, files, out, options, preview)


def _run_claimed(
    predictor: Any, case: str, files: list[str], out: Path, options: BatchOptions, preview: Preview | None
) -> str:
    if out.exists() and not options.overwrite:
        status = "exists (skipped; --overwrite to redo)"
        draw = preview is not None and not preview_path(out.parent, case).exists()
    else:
        status = predict_case(predictor, case, files, out, options)
        draw = preview is not None
    if draw and preview is not None:
        try:
            status += "; " + preview.write(case, files[0], out)
        except Exception as err:  # noqa: BLE001 - reported in the table; the prediction itself is written
            status = f"FAILED: preview: {type(err).__name__}: {err} (prediction {status})"
    return status


def predict_cases(
    predictor: Any,
    cases: Sequence[tuple[str, list[str], Path]],
    options: BatchOptions,
    preview: Preview | None = None,
    on_case: Callable[[str, str], None] | None = None,
) -> dict[str, str]:
    """Run every ``(case, files, output)``; a failing case is reported and the batch goes on.

    Returns:
        ``{input file name: status}`` (``ok ...``, ``exists (skipped ...)`` or ``FAILED: ...``), keyed by the full
        file name so that ``case.nii`` and ``case.nrrd`` stay apart.
    """
    results: dict[str, str] = {}
    for case, files, out in cases:
        key = Path(files[0]).name
        try:
            results[key] = run_case(predictor, case, files, out, options, preview)
        except Exception as err:  # noqa: BLE001 - one bad case must not stop the batch
            results[key] = f"FAILED: {_reason(err)}"
        if on_case is not None:
            on_case(key, results[key])
    return results


def _reason(err: BaseException) -> str:
    """One line: our own messages as they are (they name the file), anything else with its type."""
    text = " ".join(str(err).split())
    return text if isinstance(err, (ValueError, OSError)) and text else f"{type(err).__name__}: {text}"


def write_summary(out_dir: Path, runs: Sequence[str | Path], results: dict[str, str]) -> Path:
    """Write (or update) ``predict_summary.json``: earlier rows of other cases are kept, this run's rows win."""
    path = out_dir / SUMMARY
    cases: dict[str, Any] = {}
    models: list[str] = []
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
            cases = dict(earlier.get("cases") or {})
            models = [str(m) for m in earlier.get("models") or []]
        except (OSError, ValueError, AttributeError):
            cases, models = {}, []
    cases.update(results)
    models += [str(r) for r in runs if str(r) not in models]
    atomic_write_json(path, {"models": models, "cases": cases})
    return path
