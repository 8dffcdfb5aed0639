"""What one ``medseg predict`` call will do, decided before any inference: the trained runs, the cases, each
case's output file — refusing, up front and by name, what could only fail or clash later (an unwritable or clashing
output, a folder that is the input folder, an unknown output format)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medseg.data.io import IMAGE_SUFFIXES, is_image_file
from medseg.inference.batch import output_name
from medseg.inference.cases import dicom_cases, list_cases
from medseg.run_dir import RunDir, trained_runs
from medseg.validate import check_writable

OUTPUT_FORMATS = ("nii.gz", "nii", "nrrd", "mha")


@dataclass
class PredictJob:
    """Trained runs to ensemble, the output folder, ``(case, channel files, output file)`` and rejected inputs."""

    runs: list[Path]
    out_dir: Path
    cases: list[tuple[str, list[str], Path]]
    rejected: dict[str, str] = field(default_factory=dict)


def prepare_job(
    model: str | Path, inputs: str | Path, output: str | Path, folds: list[int] | None = None, fmt: str | None = None
) -> PredictJob:
    """Resolve and check everything ``predict`` needs; a one-line ``ValueError`` / ``OSError`` on any problem.

    ``output`` is a folder, or — for a single input file — the output file itself when it ends with an image suffix
    (``-o seg.nii.gz``, as TotalSegmentator users expect).
    """
    if fmt is not None and fmt.lstrip(".").lower() not in OUTPUT_FORMATS:
        raise ValueError(f"--format {fmt}: not an output image format (one of {', '.join(OUTPUT_FORMATS)})")
    runs = [r.path for r in trained_runs(model, folds)]
    in_channels = int(RunDir(runs[0]).preprocessing_info()["in_channels"])
    inp = Path(inputs).expanduser().absolute()
    out = Path(output).expanduser().absolute()
    if not inp.exists():
        raise ValueError(f"-i {inp}: no such file or folder")
    series = dicom_cases(inp) if inp.is_dir() and not any(is_image_file(p) for p in inp.iterdir()) else None
    if series is not None and in_channels != 1:
        raise ValueError(f"-i {inp}: a DICOM series has 1 channel, the model needs {in_channels}")
    cases, rejected = list_cases(inp, in_channels) if series is None else (series[0], {})
    refused = rejected | (series[1] if series else {})
    if series is not None and not cases:
        raise ValueError(f"-i {inp}: no consistent DICOM series: {'; '.join(refused.values())}")
    out_file = inp.is_file() and out.name.lower().endswith(IMAGE_SUFFIXES) and not out.is_dir()
    out_dir = out.parent if out_file else out
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"-o {out_dir}: is a file, not a folder")
    if out_dir.resolve() == (inp if inp.is_dir() else inp.parent).resolve() and not out_file:
        raise ValueError(f"-o {out_dir}: refusing to write into the input folder")
    planned: list[tuple[str, list[str], Path]] = []
    for case, files in cases:
        target = out if out_file else out_dir / output_name(case, files[0], fmt)
        if target.resolve() in {Path(f).resolve() for f in files}:
            raise ValueError(f"-o {target}: refusing to overwrite the input image")
        planned.append((case, files, target))
    _check_collisions(planned)
    check_writable(out_dir, "-o")
    return PredictJob(runs, out_dir, planned, refused)


def _check_collisions(planned: list[tuple[str, list[str], Path]]) -> None:
    """Two inputs that would write one output file (``case.nii`` and ``case.nrrd`` with ``--format nii.gz``)."""
    seen: dict[Path, str] = {}
    clashes = []
    for _, files, target in planned:
        key = target.resolve()
        if key in seen:
            clashes.append(f"{Path(seen[key]).name} and {Path(files[0]).name} -> {target.name}")
        seen.setdefault(key, files[0])
    if clashes:
        raise ValueError(
            f"inputs that would write the same output: {'; '.join(clashes)} (rename one, or predict them separately)"
        )
