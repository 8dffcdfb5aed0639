#!/usr/bin/env python
"""End-to-end prediction time and peak memory: ``medseg predict`` against a hand-written MONAI pipeline, in one run.

Both pipelines segment the same synthetic CT-like volume (int16 NIfTI, LPS-oriented like DICOM conversions, anisotropic
spacing; default 512×512×300 at 0.78×0.78×2 mm) with the same network and weights: a small medseg U-Net (widths
``--widths``, default 8 16 32) **randomly initialised** with a fixed seed, saved as a train run dir (``config.yaml``,
``preprocessing.json``, ``checkpoints/best.ckpt``) whose target spacing is ``--target-spacing`` (MRI-style per-case
z-score normalisation, so both pipelines normalise alike). The weights are untrained: the timings and memory do not
depend on them, and both pipelines must still agree voxel by voxel (the agreement is reported).

* ``medseg``: ``medseg predict -m RUN -i FILE -o OUT`` (``medseg.cli.predict.run``): load → RAS → resample →
  crop to non-zero → z-score → Gaussian sliding window → bounded-memory inversion to the input grid + argmax → uint8
  NIfTI with the input's header.
* ``monai``: the MONAI tutorial pipeline: ``LoadImaged`` → ``EnsureTyped(float32)`` → ``Orientationd(RAS)`` →
  ``Spacingd`` → ``NormalizeIntensityd`` → ``sliding_window_inference`` (same network, roi, overlap, sw batch size,
  ``mode="gaussian"``) → softmax → ``Invertd`` (bilinear) → ``AsDiscreted(argmax)`` → ``SaveImaged`` (uint8,
  ``resample=False``).

Each pipeline runs in a fresh subprocess of this script (``--_child NAME``) so that its peak RSS (``ru_maxrss``) is its
own; the seconds are the wall time from after the imports to the written file (model loading included), and the CPU
seconds (user + system) of the same span, which a busy shared machine inflates less than the wall time. On CUDA the
peak of ``torch.cuda.max_memory_allocated`` is reported too. The parent watches each child's RSS and kills it past
``--max-rss-gb`` (reported as ``killed``), so a pipeline that would exhaust the machine does not take it down.

Examples::

    python scripts/bench_predict.py --shape 128 128 64                      # quick smoke test (~1 min on 2 cores)
    python scripts/bench_predict.py --json bench_predict_cpu.json           # 512×512×300, CPU
    python scripts/bench_predict.py --shape 512 512 600 --pipelines medseg  # the 600-slice class, ours only
    python scripts/bench_predict.py --device cuda --json bench_predict_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PIPELINES = ("medseg", "monai")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300], help="input volume (voxels)")
    p.add_argument("--spacing", type=float, nargs=3, default=[0.78, 0.78, 2.0], help="input spacing (mm)")
    p.add_argument("--target-spacing", type=float, nargs=3, default=[1.5, 1.5, 2.0], help="network spacing (mm)")
    p.add_argument("--classes", type=int, default=3, help="output classes including background")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--roi", type=int, nargs=3, default=[96, 96, 48], help="sliding-window size (network voxels)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--sw-batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each pipeline (default 1)")
    p.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    p.add_argument("--max-rss-gb", type=float, default=16.0, help="kill a pipeline whose RSS passes this")
    p.add_argument("--workdir", default=None, help="keep the volume, run dir and outputs here (default: temporary)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--_child", choices=PIPELINES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--_run", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_input", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- inputs
def write_volume(path: Path, shape: Sequence[int], spacing: Sequence[float], seed: int = 0) -> None:
    """A CT-like int16 volume (air −1000, body, two organs, noise) with an LPS affine, written slab by slab."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x = ((np.arange(nx) - nx / 2) * spacing[0]).astype(np.float32)[:, None]
    y = ((np.arange(ny) - ny / 2) * spacing[1]).astype(np.float32)[None, :]
    data = np.empty(shape, np.int16)
    half = np.array([nx * spacing[0], ny * spacing[1], nz * spacing[2]], np.float32) / 2
    for k in range(nz):
        z = np.float32((k - nz / 2) * spacing[2])
        body = (x / (0.85 * half[0])) ** 2 + (y / (0.7 * half[1])) ** 2 + (z / (1.1 * half[2])) ** 2
        organ = ((x - 0.2 * half[0]) / (0.3 * half[0])) ** 2 + (y / (0.25 * half[1])) ** 2 + (z / (0.5 * half[2])) ** 2
        lesion = ((x + 0.3 * half[0]) / (0.1 * half[0])) ** 2 + (y / (0.1 * half[1])) ** 2 + (z / (0.2 * half[2])) ** 2
        hu = np.where(body < 1, 40.0, -1000.0) + np.where(organ < 1, 60.0, 0.0) + np.where(lesion < 1, -30.0, 0.0)
        data[:, :, k] = (hu + rng.normal(0, 20, (nx, ny))).astype(np.int16)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS voxel axes, as from DICOM
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))


def write_run(run: Path, args: argparse.Namespace) -> None:
    """A train run dir holding a randomly initialised (seeded) U-Net, loadable by ``medseg predict``."""
    import torch

    from medseg.config import build, compose_config, resolved_yaml
    from medseg.fileio import atomic_write_json, atomic_write_text

    overrides = [
        "data=nifti",
        f"data.root={run}",
        "model/net=unet",
        f"model.net.channels=[{','.join(map(str, args.widths))}]",
        f"data.patch_size=[{','.join(map(str, args.roi))}]",
        f"data.spacing=[{','.join(map(str, args.target_spacing))}]",
        f"data.num_classes={args.classes}",
        "data.in_channels=1",
        f"model.overlap={args.overlap}",
        f"model.sw_batch_size={args.sw_batch_size}",
    ]
    cfg = compose_config("train", overrides, run_dir=run)
    torch.manual_seed(0)
    module = build(cfg.model, roi_size=list(args.roi))
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict()}, run / "checkpoints" / "best.ckpt")
    atomic_write_text(run / "config.yaml", resolved_yaml(cfg))
    prep = {
        "layout": "synthetic",
        "spacing": list(args.target_spacing),
        "modality": "MRI",
        "num_classes": args.classes,
        "in_channels": 1,
        "intensity_stats": None,
        "roi_size": list(args.roi),
        "spatial_dims": 3,
    }
    atomic_write_json(run / "preprocessing.json", prep)


# ---------------------------------------------------------------------------------------------------- children
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_medseg(args: argparse.Namespace) -> None:
    from medseg.cli.predict import run as run_predict
    from medseg.quiet import quiet_third_party

    quiet_third_party()
    argv = ["-m", args._run, "-i", args._input, "-o", args._out, "--device", args.device, "--overwrite"]
    if run_predict(argv) != 0:
        raise SystemExit("medseg predict failed")


def _child_monai(args: argparse.Namespace) -> None:
    import torch
    from monai import transforms as T
    from monai.inferers import sliding_window_inference
    from omegaconf import OmegaConf

    from medseg.config import build

    run = Path(args._run)
    prep = json.loads((run / "preprocessing.json").read_text())
    module = build(OmegaConf.load(run / "config.yaml").model, roi_size=prep["roi_size"])
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    net = module.net.to(args.device).eval()
    pre = T.Compose(
        [
            T.LoadImaged("image", ensure_channel_first=True, image_only=True),
            T.EnsureTyped("image", dtype=torch.float32),
            T.Orientationd("image", axcodes="RAS"),
            T.Spacingd("image", pixdim=prep["spacing"], mode="bilinear"),
            T.NormalizeIntensityd("image", channel_wise=True),
        ]
    )
    post = T.Compose(
        [
            T.Activationsd("pred", softmax=True),
            T.Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False),
            T.AsDiscreted("pred", argmax=True),
            T.SaveImaged(
                "pred",
                output_dir=args._out,
                output_postfix="seg",
                output_dtype=np.uint8,
                resample=False,
                separate_folder=False,
                print_log=False,
            ),
        ]
    )
    data = pre({"image": args._input})
    with torch.no_grad():
        image = data["image"][None].to(args.device)
        logits = sliding_window_inference(
            image, prep["roi_size"], module.sw_batch_size, net, module.overlap, "gaussian"
        )
    data["pred"] = logits[0].cpu()  # type: ignore[index]
    post(data)


def run_child(args: argparse.Namespace) -> None:
    import monai.transforms  # noqa: F401
    import torch

    import medseg.cli.predict  # noqa: F401 - imports outside the timed region, like a warm `medseg` process

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    rss_imports = _peak_rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    {"medseg": _child_medseg, "monai": _child_monai}[args._child](args)
    if cuda:
        torch.cuda.synchronize()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
        "peak_rss_mb": round(_peak_rss_mb()),
        "rss_after_imports_mb": round(rss_imports),
        "cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------------- parent
def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def launch(name: str, args: argparse.Namespace, run: Path, volume: Path, out: Path) -> dict[str, Any]:
    """Run one pipeline in a fresh subprocess, killing it past ``--max-rss-gb``."""
    cmd = [sys.executable, __file__, "--_child", name, "--_run", str(run), "--_input", str(volume)]
    cmd += ["--_out", str(out), "--device", args.device, "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NO_COLOR": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    limit, seen = args.max_rss_gb * 1024, 0.0
    while proc.poll() is None:
        seen = max(seen, _rss_mb(proc.pid))
        if seen > limit:
            proc.kill()
            proc.wait()
            return {"pipeline": name, "status": f"killed (RSS > {args.max_rss_gb:g} GB)", "peak_rss_mb": round(seen)}
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"pipeline": name, "status": f"failed (exit {proc.returncode}): {stderr.strip()[-600:]}"}
    return {"pipeline": name, "status": "ok", **json.loads(lines[-1][len("RESULT ") :])}


def _agreement(a: Path, b: Path) -> float | None:
    import nibabel as nib

    if not (a.is_file() and b.is_file()):
        return None
    img_a: Any = nib.load(str(a))
    img_b: Any = nib.load(str(b))
    la, lb = np.asanyarray(img_a.dataobj), np.asanyarray(img_b.dataobj)
    return float((la == lb).mean()) if la.shape == lb.shape else 0.0


def machine(device: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    if device.startswith("cuda"):
        import torch

        desc += f", {torch.cuda.get_device_name(torch.device(device))}"
    return desc


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args._child:
        run_child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        volume, run = work / "ct.nii.gz", work / "run"
        t0 = time.perf_counter()
        write_volume(volume, args.shape, args.spacing)
        write_run(run, args)
        print(f"inputs written in {time.perf_counter() - t0:.1f} s: {volume} {tuple(args.shape)}", flush=True)
        rows = []
        for name in args.pipelines:
            out = work / f"out_{name}"
            rows.append(launch(name, args, run, volume, out))
            print(json.dumps(rows[-1]), flush=True)
        agree = _agreement(work / "out_medseg" / "ct.nii.gz", work / "out_monai" / "ct_seg.nii.gz")
    report = {
        "machine": machine(args.device),
        "device": args.device,
        "threads": args.threads,
        "torch_version": __import__("torch").__version__,
        "monai_version": __import__("monai").__version__,
        "shape": args.shape,
        "spacing": args.spacing,
        "target_spacing": args.target_spacing,
        "classes": args.classes,
        "widths": args.widths,
        "roi": args.roi,
        "overlap": args.overlap,
        "network": "medseg UNet, randomly initialised (seed 0)",
        "label_agreement": agree,
        "results": rows,
    }
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['machine']} | device {report['device']} | {report['threads']} thread(s)")
    print(f"volume {tuple(report['shape'])} @ {report['spacing']} mm → network {report['target_spacing']} mm, ")
    print(f"{report['classes']} classes, roi {report['roi']}, overlap {report['overlap']}, {report['network']}")
    print(f"{'pipeline':<10} {'status':<10} {'seconds':>8} {'CPU s':>8} {'peak RSS MB':>12} {'CUDA max alloc MB':>18}")
    for r in report["results"]:
        cuda = r.get("cuda_max_allocated_mb")
        print(
            f"{r['pipeline']:<10} {r['status'][:30]:<10} {r.get('seconds', '-'):>8} {r.get('cpu_seconds', '-'):>8} "
            f"{r.get('peak_rss_mb', '-'):>12} {cuda if cuda is not None else '-':>18}"
        )
    if report["label_agreement"] is not None:
        print(f"label agreement medseg vs monai: {100 * report['label_agreement']:.4f} % of voxels")


if __name__ == "__main__":
    main()
