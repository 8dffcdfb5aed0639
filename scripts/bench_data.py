#!/usr/bin/env python
"""Data-pipeline benchmark: ``data.cache`` = memory / disk / none against MONAI's PersistentDataset, no network.

The demo dataset (``medseg.data.synthetic.make_demo_dataset``, ``--cases`` volumes, MSD layout) is preprocessed at
``--spacing`` mm and the training loader (``SegDataModule.train_dataloader``: pad, pos/neg patch sampling,
augmentation) plus the validation loader are iterated for ``--epochs`` epochs without any model, so every second is
data time. Modes:

* ``memory``: MONAI ``CacheDataset`` (what ``data.cache=memory`` builds): every run and fold decodes, resamples and
  keeps all volumes in RAM.
* ``disk``: ``data.cache=disk`` (``medseg.data.cache``): ``.npy`` files per case built once, read back memory-mapped.
* ``persistent``: MONAI ``PersistentDataset`` on the same transforms: pickled tensors (``torch.save``) per case,
  keyed by the item's paths only (a changed file or spacing is not noticed), built lazily during the first epoch.
* ``none``: no cache: every access decodes and resamples (the reference).

Each mode runs twice in fresh subprocesses (``--_child``) on an empty cache folder: the *first run* (cold cache) and a
*second run* (the cache of the first, as a later run, fold or Turbolift stage sees it). Reported per mode (median over
``--repeats``): ``check_s`` (``prepare_dataset``: discovery and the dataset checks, which read every case; not counted
in the other columns) and ``second_check_s`` (the same in the second run: ``disk`` keeps the check results of unchanged
cases, the other modes read every case again), ``setup_s`` (prepare_data + setup: where memory/disk decode),
``first_epoch_s`` (setup + epoch 1),
``later_epoch_s`` (median of epochs 2..E; one epoch of a run often holds a ~0.3 s pause of Python's garbage
collector, in every mode), ``second_start_s`` (second run: setup until the first training batch),
``second_first_epoch_s``, ``rss_peak_mb`` (``ru_maxrss`` of the first run), ``rss_anon_mb`` (anonymous RSS at the end:
memory the OS cannot reclaim; memory-mapped file pages are not in it), ``cache_mb`` (disk used).

Timings are wall seconds from after the imports; on a busy shared machine they are noisy, compare modes within one
invocation and use ``--repeats``.

Examples::

    python scripts/bench_data.py                                    # the demo: 16 cases at 2 mm, 4 epochs
    python scripts/bench_data.py --cases 32 --spacing 1.0 --json bench_data_1mm.json   # 8x larger volumes
    python scripts/bench_data.py --modes memory disk --num-workers 1 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODES = ("memory", "disk", "persistent", "none")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.epilog = __doc__.split("\n", 1)[1]
    p.add_argument("--cases", type=int, default=16, help="demo volumes to generate (default 16, the demo)")
    p.add_argument("--spacing", type=float, default=2.0, help="isotropic target spacing in mm (demo: 2.0)")
    p.add_argument("--patch", type=int, default=32, help="cubic training patch (demo: 32)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (>= 2)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loader workers (0: all in one process)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--repeats", type=int, default=1, help="runs per mode; the table shows medians")
    p.add_argument("--workdir", type=Path, default=None, help="dataset + caches (default: a temporary folder)")
    p.add_argument("--json", type=Path, default=Path("bench_data.json"), help="where to write the results")
    p.add_argument("--_child", nargs=3, metavar=("MODE", "ROOT", "CACHE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (later-epoch time)")
    return args


# ------------------------------------------------------------------------------------------------------- child
def _rss_mb() -> dict[str, float]:
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _watch_gc() -> list[float]:
    """Durations of the garbage collector's runs from now on (appended as they happen)."""
    pauses: list[float] = []
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    return pauses


def _datasets(args: argparse.Namespace, mode: str, root: str, cache: str) -> tuple[Any, Any, Any, float]:
    from monai.data import DataLoader, PersistentDataset

    from medseg.data.datamodule import SegDataModule
    from medseg.data.splits import train_val_split
    from medseg.data.transforms import train_transforms, val_transforms

    dm = SegDataModule(
        root=root,
        spacing=[args.spacing] * 3,
        patch_size=[args.patch] * 3,
        batch_size=4,
        samples_per_volume=2,
        pos_fraction=0.5,
        num_workers=args.num_workers,
        cache="none" if mode == "persistent" else mode,
        cache_dir=cache,
        augment={"flip": 0.5, "rotate90": 0.5, "intensity": 0.2, "noise": 0.15},
    )
    start = time.perf_counter()
    dm.prepare_dataset(lambda ids: train_val_split(ids, 0.25, 12345))  # discovery + checks (read every case)
    check_s = time.perf_counter() - start
    dm.prepare_data()
    dm.setup("fit")
    if mode == "persistent":
        t_train = train_transforms(dm.spacing, dm.modality, dm.stats, dm.patch, 2, 0.5, dm.augment)
        dm.train_ds = PersistentDataset(dm._items(dm.split["train"]), t_train, cache_dir=Path(cache) / "train")
        t_val = val_transforms(dm.spacing, dm.modality, dm.stats)
        dm.val_ds = PersistentDataset(dm._items(dm.split["val"]), t_val, cache_dir=Path(cache) / "val")
    val = DataLoader(dm.val_ds, batch_size=1, num_workers=0)
    return dm, dm.train_dataloader(), val, check_s


def run_child(args: argparse.Namespace) -> None:
    import monai.data  # noqa: F401 - imports are not timed
    import torch

    import medseg.data.datamodule  # noqa: F401

    torch.set_num_threads(1)
    mode, root, cache = args._child
    gc_pauses = _watch_gc()
    t0 = time.perf_counter()
    dm, train, val, check_s = _datasets(args, mode, root, cache)
    setup = time.perf_counter() - t0 - check_s
    epochs, epochs_gc, first_batch = [], [], None
    for _ in range(args.epochs):
        start, gc_before = time.perf_counter(), sum(gc_pauses)
        for _batch in train:
            if first_batch is None:
                first_batch = time.perf_counter() - t0
        for _batch in val:
            pass
        epochs.append(time.perf_counter() - start)
        epochs_gc.append(sum(gc_pauses) - gc_before)
    rss = _rss_mb()
    result = {
        "check_s": check_s,
        "setup_s": setup,
        "start_s": first_batch - check_s,
        "epochs_s": epochs,
        "epochs_gc_s": epochs_gc,  # time in Python's garbage collector during each epoch
        "first_epoch_s": setup + epochs[0],  # without the dataset checks (the same for every mode)
        "later_epoch_s": statistics.median(epochs[1:]),  # median: robust to a garbage-collector pause (~0.3 s)
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_end_mb": rss.get("VmRSS"),
        "rss_anon_mb": rss.get("RssAnon"),
        "rss_file_mb": rss.get("RssFile"),
        "n_train": len(dm.split["train"]),
        "n_val": len(dm.split["val"]),
    }
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------------- parent
def _child(args: argparse.Namespace, mode: str, root: Path, cache: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--_child", mode, str(root), str(cache)]
    cmd += ["--spacing", str(args.spacing), "--patch", str(args.patch), "--epochs", str(args.epochs)]
    cmd += ["--num-workers", str(args.num_workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{mode} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from medseg.data.synthetic import make_demo_dataset

    root = make_demo_dataset(workdir / f"demo_{args.cases}", n_cases=args.cases)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
    for rep in range(args.repeats):
        for mode in args.modes:  # interleaved, so that load changes on the machine hit every mode alike
            cache = workdir / f"cache_{mode}_{rep}"
            shutil.rmtree(cache, ignore_errors=True)
            first = _child(args, mode, root, cache)
            second = _child(args, mode, root, cache)
            runs[mode].append({"first": first, "second": second, "cache_mb": _du_mb(cache)})
            shutil.rmtree(cache, ignore_errors=True)
            print(f"  {mode} repeat {rep + 1}: first epoch {first['first_epoch_s']:.2f} s", flush=True)
    table = {}
    for mode, rs in runs.items():

        def med(f: Any, rs: list[dict[str, Any]] = rs) -> float:
            return statistics.median(f(r) for r in rs)

        table[mode] = {
            "check_s": med(lambda r: r["first"]["check_s"]),
            "setup_s": med(lambda r: r["first"]["setup_s"]),
            "first_epoch_s": med(lambda r: r["first"]["first_epoch_s"]),
            "later_epoch_s": med(lambda r: r["first"]["later_epoch_s"]),
            "second_check_s": med(lambda r: r["second"]["check_s"]),
            "second_start_s": med(lambda r: r["second"]["start_s"]),
            "second_first_epoch_s": med(lambda r: r["second"]["first_epoch_s"]),
            "rss_peak_mb": med(lambda r: r["first"]["rss_peak_mb"]),
            "rss_anon_mb": med(lambda r: r["first"]["rss_anon_mb"] or 0.0),
            "cache_mb": med(lambda r: r["cache_mb"]),
        }
    return {"table": table, "runs": runs}


def print_table(table: dict[str, dict[str, float]]) -> None:
    cols = [
        ("check_s", "checks s"),
        ("setup_s", "setup s"),
        ("first_epoch_s", "1st epoch s"),
        ("later_epoch_s", "later epoch s"),
        ("second_check_s", "2nd run checks s"),
        ("second_start_s", "2nd run start s"),
        ("second_first_epoch_s", "2nd run 1st epoch s"),
        ("rss_peak_mb", "peak RSS MB"),
        ("rss_anon_mb", "anon RSS MB"),
        ("cache_mb", "cache MB"),
    ]
    print("| mode | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for mode, row in table.items():
        cells = [f"{row[k]:.2f}" if k.endswith("_s") else f"{row[k]:.0f}" for k, _ in cols]
        print(f"| {mode} | " + " | ".join(cells) + " |")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args._child:
        run_child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"demo: {args.cases} cases at {args.spacing} mm, {args.epochs} epochs, {args.num_workers} workers")
        result = measure(args, workdir)
    print_table(result["table"])
    result["settings"] = {k: v for k, v in vars(args).items() if k not in ("_child", "json", "workdir")}
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
