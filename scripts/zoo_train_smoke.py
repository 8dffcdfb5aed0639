"""Train every network config for one epoch on the demo data, in 2D and 3D, through the real `medseg train` CLI.

Usage:
    python scripts/zoo_train_smoke.py [--nets unet mk_unet ...] [--blocks] [--dims 2 3] [--json out.json]
    python scripts/zoo_train_smoke.py --nets encoder_block=mkir skip_gate=gag   # blocks composed into unet

Prints a table (net, dims, exit code, val Dice after one epoch, seconds) and writes JSON. This is the acceptance
check "every network trains for one epoch on the demo data in 2D and 3D"; it is a script, not a test, because it
takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medseg.config import config_dir


def run_one(net: str, dims: int, workdir: Path) -> dict:
    """``net`` is a network config name, or ``group=name`` for a block config composed into the plain unet."""
    run = workdir / f"{net.replace('=', '-')}_{dims}d"
    selection = [f"model/net={net}"] if "=" not in net else ["model/net=unet", f"model/net/{net}"]
    cmd = [
        sys.executable,
        "-m",
        "medseg.cli",
        "train",
        *selection,
        f"model.net.spatial_dims={dims}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={run}",
        "num_threads=1",
        "+trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
    ]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = run / "metrics.json"
    dice = json.loads(metrics.read_text())["val_dice"] if metrics.is_file() else None
    tail = "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-800:]
    return {
        "net": net,
        "dims": dims,
        "exit": proc.returncode,
        "val_dice": dice,
        "seconds": round(time.time() - start, 1),
        "error": tail,
    }


def main() -> None:
    nets = sorted(p.stem for p in (config_dir() / "model" / "net").glob("*.yaml"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    blocks = sorted(
        f"{group}={p.stem}"
        for group in ("encoder_block", "skip_gate", "bottleneck", "input_pyramid")
        for p in (config_dir() / "model" / "net" / group).glob("*.yaml")
    )
    parser.add_argument("--nets", nargs="*", default=nets, help="network configs, or GROUP=NAME block configs")
    parser.add_argument("--blocks", action="store_true", help="also every block config, composed into unet")
    parser.add_argument("--dims", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (default: work dir)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zoo-smoke-"))
    rows = []
    for net in args.nets + (blocks if args.blocks else []):
        for dims in args.dims:
            rows.append(run_one(net, dims, workdir))
            r = rows[-1]
            dice = "-" if r["val_dice"] is None else f"{r['val_dice']:.3f}"
            print(f"{net:20s} {dims}D exit {r['exit']}  val Dice {dice:>6s}  {r['seconds']:6.1f} s", flush=True)
    out = args.json or workdir / "zoo_train_smoke.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")
    failed = [f"{r['net']} {r['dims']}D" for r in rows if r["exit"] != 0]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
