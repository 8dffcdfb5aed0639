"""Evaluate a trained fold on its held-out test cases, in each label's own voxel grid."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from medseg.data.io import read_volume
from medseg.evaluation.aggregate import case_means, mean_or_none
from medseg.evaluation.metrics import case_metrics
from medseg.inference.predictor import Predictor
from medseg.inference.writer import write_like
from medseg.run_dir import RunDir

log = logging.getLogger(__name__)


def evaluate_test_cases(
    run: RunDir, dm: Any, case_ids: list[str], nsd_tolerance_mm: float = 2.0, info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Predict each test case with the run's best checkpoint, invert to the input grid, score against the label.

    Writes the run's predictions and its test metrics (``per_case`` rows as in a CV summary, plus ``info``, e.g.
    how the checkpoint was selected: a CV summary copies these keys into its fold entries).
    """
    predictor = Predictor([run.path])
    by_id = {c["id"]: c for c in dm.spec.cases}
    values = dm.label_values or list(range(dm.num_classes))  # predictions are written in the label files' values
    names = {v: dm.spec.labels.get(v, f"class_{v}") for v in values[1:]}
    rows = []
    for cid in case_ids:
        case = by_id[cid]
        pred, _ = predictor.predict(case["image"])
        _, affine, ref = read_volume(case["label"])
        spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
        raw = case_metrics(pred, np.asarray(ref).astype(np.int64), spacing, list(names), nsd_tolerance_mm)
        metrics = {names[int(k)]: v for k, v in raw.items()}
        rows.append({"case": cid, "metrics": metrics, **case_means(metrics)})
        write_like(pred, case["image"][0], run.prediction(cid))
        log.info("test case %s: Dice %s", cid, rows[-1]["dice_mean"])
    fold = dm.split.get("fold")
    run.write_json(run.test_metrics, {"fold": fold, **(info or {}), "per_case": rows})
    return {"dice_mean": mean_or_none(r["dice_mean"] for r in rows), "n_test": len(rows)}
