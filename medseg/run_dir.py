"""The run directory: the contract between training and ``predict``/``evaluate``/``export``/``plot``/``compare``.

Every file name of a run directory is spelt here and nowhere else in the package (tests/test_architecture.py).

A **train run** (``medseg train``, one CV fold, one Turbolift stage without CV)::

    config.yaml            the resolved config (data: medseg.safe_config)
    preprocessing.json     what predict must redo (spacing, modality, intensity statistics, patch, classes)
    run_state.json         running / finished / failed (+ who, when, why)
    metrics.json           validation of the best checkpoint
    splits.json            its train/val split (a CV fold: the CV's folds)
    init_from.json         the checkpoint it started from (fine-tuning, Turbolift)
    checkpoints/best.ckpt, checkpoints/last.ckpt
    logs/metrics.csv       the CSV log (training curves)
    test_metrics.json, predictions/<case>.nii.gz   (a CV fold: its held-out test cases)
    plan.yaml              the configuration the planner chose (data=nifti; ``medseg.planning``), when planned

A **CV run** (``medseg cv``): ``splits.json``, ``fold_<k>/`` (train runs), ``cv_summary.json``, ``per_case.csv``,
``per_case_dice.png``, ``report.md``. A **Turbolift run**: ``stage_<i>_<name>/`` (train or CV runs),
``baseline_<name>/`` (CV runs; ``baseline_reverse/chain/stage_<i>_<name>/`` holds the reversed chain's earlier
stages), ``turbolift_summary.json``, ``turbolift_methods.png``. Any run may hold
``training_curves.png``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

from medseg.fileio import atomic_write_json, atomic_write_text, process_alive

RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
CHECKPOINTS = ("best", "last")
_FOLD = re.compile(r"^fold_(\d+)$")
_STAGE = re.compile(r"^stage_(\d+)_(.+)$")


class RunDirError(ValueError):
    """A run directory that cannot be used for what was asked; one line that says why and how to proceed."""


class RunDir:
    """Typed access to one run directory (it need not exist yet).

    Args:
        path: the folder; ``~`` is expanded and the path made absolute.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().absolute()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    # ---- files of a train run ------------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def preprocessing(self) -> Path:
        return self.path / "preprocessing.json"

    @property
    def splits(self) -> Path:
        return self.path / "splits.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def test_metrics(self) -> Path:
        return self.path / "test_metrics.json"

    @property
    def init_record(self) -> Path:
        return self.path / "init_from.json"

    @property
    def state_file(self) -> Path:
        return self.path / "run_state.json"

    @property
    def plan(self) -> Path:
        return self.path / "plan.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, which: str = "best") -> Path:
        """``checkpoints/best.ckpt`` or ``checkpoints/last.ckpt`` (whether or not it exists)."""
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
        return self.checkpoints / f"{which}.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint("best")

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint("last")

    @property
    def logs(self) -> Path:
        """The CSV logger's folder (``logger.csv.name``)."""
        return self.path / "logs"

    @property
    def log_csv(self) -> Path:
        return self.logs / "metrics.csv"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def prediction(self, case: str) -> Path:
        return self.predictions / f"{case}.nii.gz"

    @property
    def training_curves(self) -> Path:
        return self.path / "training_curves.png"

    # ---- files of a CV / Turbolift run -----------------------------------------------------------------------------
    @property
    def cv_summary(self) -> Path:
        return self.path / "cv_summary.json"

    @property
    def per_case_csv(self) -> Path:
        return self.path / "per_case.csv"

    @property
    def per_case_png(self) -> Path:
        return self.path / "per_case_dice.png"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def turbolift_summary(self) -> Path:
        return self.path / "turbolift_summary.json"

    @property
    def turbolift_png(self) -> Path:
        return self.path / "turbolift_methods.png"

    # ---- children --------------------------------------------------------------------------------------------------
    def fold(self, k: int) -> RunDir:
        return RunDir(self.path / f"fold_{int(k)}")

    def folds(self) -> list[tuple[int, RunDir]]:
        """``(k, fold run)`` of every ``fold_<k>/`` folder, by k."""
        if not self.path.is_dir():
            return []
        found = [(int(m[1]), RunDir(p)) for p in self.path.iterdir() if p.is_dir() and (m := _FOLD.match(p.name))]
        return sorted(found, key=lambda kv: kv[0])

    def stage(self, index: int, name: str) -> RunDir:
        return RunDir(self.path / f"stage_{int(index)}_{name}")

    def baseline(self, name: str) -> RunDir:
        return RunDir(self.path / f"baseline_{name}")

    @property
    def chain(self) -> RunDir:
        """The earlier stages of a baseline that is itself a chain (``baseline_reverse/chain/stage_<i>_<name>/``)."""
        return RunDir(self.path / "chain")

    def child(self, name: str) -> RunDir:
        """A sub-run named in a summary (``final_stage_dir``), refusing names that leave this folder."""
        if not name or Path(name).name != name or name in (".", ".."):
            raise RunDirError(f"{self.turbolift_summary}: sub-run name {name!r} is not a plain folder name")
        return RunDir(self.path / name)

    def test_results(self) -> list[tuple[str, Path]]:
        """``(sub-folder name, test_metrics.json)`` of every sub-folder holding one (CV folds, multirun jobs)."""
        if not self.path.is_dir():
            return []
        return sorted((p.parent.name, p) for p in self.path.glob(f"*/{self.test_metrics.name}"))

    # ---- what kind of run ------------------------------------------------------------------------------------------
    def is_train_run(self) -> bool:
        """A trained (or training) model: ``config.yaml`` and ``checkpoints/``."""
        return self.config.is_file() and self.checkpoints.is_dir()

    @property
    def kind(self) -> str | None:
        """``turbolift``, ``cv``, ``train``, or None when the folder holds no run."""
        if not self.path.is_dir():
            return None
        if self.turbolift_summary.is_file() or any(_STAGE.match(p.name) for p in self.path.iterdir() if p.is_dir()):
            return "turbolift"
        if self.folds() or self.cv_summary.is_file() or (self.splits.is_file() and not self.config.is_file()):
            return "cv"
        if self.config.is_file() or self.checkpoints.is_dir():
            return "train"
        return None

    # ---- state -----------------------------------------------------------------------------------------------------
    def mark(self, state: str, **info: Any) -> None:
        """Record the run's state (``running`` / ``finished`` / ``failed``) with who and when (rank 0 of a DDP job)."""
        if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
            return
        record = self.read_state() if state != RUNNING else {}
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        record.update(state=state, updated=now, **info)
        if state == RUNNING:
            record.update(started=now, host=socket.gethostname(), pid=os.getpid())
        atomic_write_json(self.state_file, record)

    def read_state(self) -> dict[str, Any]:
        """The recorded state (``{}`` when none or unreadable)."""
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def state(self) -> str | None:
        """``finished``, ``failed``, ``running`` (a live process on this host or another host), ``interrupted`` (its
        process is gone) or None (nothing started). Runs from before states were recorded: ``finished`` when their
        results exist, ``interrupted`` when only checkpoints do."""
        record = self.read_state()
        state = record.get("state")
        if state == RUNNING and record.get("host") == socket.gethostname() and not _alive(record.get("pid")):
            return INTERRUPTED
        if state is not None:
            return str(state)
        if self.metrics.is_file() or self.test_metrics.is_file():
            return FINISHED
        return INTERRUPTED if self.last_checkpoint.is_file() else None

    def is_finished(self) -> bool:
        return self.state == FINISHED

    def describe_state(self) -> str:
        """A short human description: ``interrupted after epoch 7 (last.ckpt)``, ``failed: <why>``, ..."""
        state = self.state
        record = self.read_state()
        if state == FAILED:
            return f"failed ({record.get('error', 'no reason recorded')})"
        if state in (RUNNING, INTERRUPTED):
            since = f" since {record['started']}" if record.get("started") else ""
            epochs = record.get("epochs_done")
            done = f", {epochs} epoch(s) checkpointed" if epochs is not None else ""
            where = f" on {record['host']} (pid {record.get('pid')})" if state == RUNNING and record.get("host") else ""
            return f"{state}{since}{where}{done}"
        return state or "not started"

    # ---- reading and writing its files ----------------------------------------------------------------------------
    def read_json(self, path: Path) -> Any:
        """A JSON file of this run; a one-line :class:`RunDirError` when it is missing or damaged."""
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunDirError(f"{path}: missing (is {self.path} a finished medseg run?)") from None
        except (OSError, ValueError) as err:
            raise RunDirError(f"{path}: unreadable ({type(err).__name__}: {err})") from None

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_json(path, obj)

    def write_text(self, path: Path, text: str) -> None:
        atomic_write_text(path, text)

    def preprocessing_info(self) -> dict[str, Any]:
        """``preprocessing.json``: spacing, modality, intensity statistics, classes, channels, patch."""
        info = self.read_json(self.preprocessing)
        missing = [k for k in ("roi_size", "num_classes", "in_channels", "spacing", "modality") if k not in info]
        if not isinstance(info, dict) or missing:
            raise RunDirError(f"{self.preprocessing}: damaged (missing {missing})")
        return info

    def usable_checkpoint(self, which: str = "best") -> Path:
        """The checkpoint file predict/export load; a one-line :class:`RunDirError` when it is missing or empty
        (never a silent fallback to another checkpoint)."""
        path = self.checkpoint(which)
        other = "last" if which == "best" else "best"
        if not path.is_file():
            alt = (
                f" (--checkpoint {other} uses {self.checkpoint(other).name})"
                if self.checkpoint(other).is_file()
                else ""
            )
            raise RunDirError(f"{path}: missing; the run is {self.describe_state()}{alt}")
        if path.stat().st_size == 0:
            raise RunDirError(f"{path}: empty file (0 bytes); the run is {self.describe_state()}")
        return path


def _alive(pid: Any) -> bool:
    try:
        return process_alive(int(pid))
    except (TypeError, ValueError):
        return False


def trained_runs(model_dir: str | Path, folds: list[int] | None = None) -> list[RunDir]:
    """The finished train runs a model folder stands for (what ``predict``/``export`` load).

    A train run is itself; a CV run is every ``fold_<k>/`` (or the chosen ``folds``); a Turbolift run is its final
    stage (named in ``turbolift_summary.json``). A fold or run that did not finish (killed, failed, still running) is
    refused with one line naming it and how to proceed, never silently ensembled or skipped.
    """
    root = RunDir(model_dir)
    if not root.path.is_dir():
        raise RunDirError(f"-m {root.path}: not a folder")
    if root.is_train_run():
        return [_finished(root, "the run")]
    if root.turbolift_summary.is_file():
        final = root.read_json(root.turbolift_summary).get("final_stage_dir")
        if not isinstance(final, str):
            raise RunDirError(f"{root.turbolift_summary}: no final_stage_dir (damaged summary)")
        return trained_runs(root.child(final).path, folds)
    if root.kind == "turbolift":
        raise RunDirError(f"-m {root.path}: a Turbolift run without turbolift_summary.json: it did not finish")
    found = dict(root.folds())
    if not found:
        raise RunDirError(f"-m {root.path}: neither a train run (config.yaml + checkpoints/) nor a CV run (fold_<k>/)")
    chosen = sorted(found) if folds is None else list(folds)
    missing = [k for k in chosen if k not in found or not found[k].is_train_run()]
    if missing:
        raise RunDirError(f"-m {root.path}: no trained fold {missing} (folds present: {sorted(found)})")
    unfinished = [(k, found[k]) for k in chosen if not found[k].is_finished()]
    if unfinished:
        which = "; ".join(f"fold_{k} is {run.describe_state()}" for k, run in unfinished)
        done = [k for k in chosen if found[k].is_finished()]
        hint = f", or ensemble the finished ones: --folds {' '.join(map(str, done))}" if done else ""
        raise RunDirError(f"-m {root.path}: {which}: re-run the same `medseg cv` command to finish it{hint}")
    return [found[k] for k in chosen]


def _finished(run: RunDir, what: str) -> RunDir:
    if not run.is_finished():
        raise RunDirError(f"-m {run.path}: {what} is {run.describe_state()}; re-run its command to finish it")
    return run


def contents(kind: str, run: str | Path | None = None) -> str:
    """What a run of ``kind`` (``train``, ``cv``, ``turbolift``) holds, for help texts; with ``run``, only what that
    run directory holds (a summary names no file that is not there: an unplanned run has no ``plan.yaml``)."""
    r = RunDir("/")

    def rel(path: Path) -> str:
        name = str(path.relative_to(r.path))
        return f"{name}/" if path.suffix == "" else name

    items = {
        "train": [rel(r.config), rel(r.preprocessing), rel(r.plan), rel(r.checkpoints), rel(r.logs), rel(r.metrics)],
        "cv": [
            rel(r.plan),
            rel(r.splits),
            "fold_<k>/",
            rel(r.cv_summary),
            rel(r.per_case_csv),
            rel(r.per_case_png),
            rel(r.report_md),
        ],
        "turbolift": ["stage_<i>_<name>/fold_<k>/", "baseline_<name>/", rel(r.turbolift_summary), rel(r.turbolift_png)],
        "trained": [rel(r.config), rel(r.checkpoints)],
    }
    if run is None:
        return ", ".join(items[kind])
    root = Path(run)
    return ", ".join(i for i in items[kind] if any(root.glob(re.sub(r"<[a-z]+>", "*", i.rstrip("/")))))
