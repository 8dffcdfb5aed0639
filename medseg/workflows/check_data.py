"""The report of ``medseg check-data``: every problem of a dataset at once (the checks that run before every
training, ``SegDataModule.prepare_dataset``, run alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.checks import Problem, check_dataset
from medseg.data.discovery import DatasetError, discover


def check_data(root: str | Path, atol: float = 1e-3) -> dict[str, Any]:
    """Check the dataset under ``root``; the JSON-ready report (``ok`` is False when any error was found).

    Keys: ``root``, ``layout``, ``cases``, ``ok_cases`` (cases without errors), ``errors``, ``warnings``, ``ok``,
    ``labels``, ``spacing`` (median, RAS mm), ``problems`` (``case``, ``path``, ``message``, ``severity``).
    """
    root = Path(root).expanduser()
    report: dict[str, Any] = {"root": str(root), "layout": None, "cases": 0, "ok_cases": 0}
    try:
        spec = discover(root, strict=False)
    except DatasetError as err:  # no dataset at all (not a folder, no layout, unparsable dataset.json)
        problems = [Problem("-", str(root), str(err))]
    else:
        infos, problems = check_dataset(spec, atol)
        failed = {p.case for p in problems if p.severity == "error"}
        report.update(layout=spec.layout, cases=len(spec.cases), ok_cases=len(set(infos) - failed))
        report["labels"] = {str(k): v for k, v in sorted(spec.labels.items())}
        if infos:
            report["spacing"] = [round(float(s), 4) for s in np.median([i.spacing for i in infos.values()], axis=0)]
    errors = sum(p.severity == "error" for p in problems)
    report.update(errors=errors, warnings=len(problems) - errors, ok=errors == 0)
    report["problems"] = [p.to_dict() for p in problems]
    return report
