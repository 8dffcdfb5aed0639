#!/usr/bin/env python
"""Train-step time and peak memory of our U-Nets against MONAI's, at the same widths, batch and patch, in one run.

Nets (``--nets`` picks a subset):

* ``attention_unet``: ours, from the packaged Hydra config ``model/net=attention_unet`` (``medseg.nets.UNet`` with
  Oktay attention gates on every skip).
* ``attention_unet_no_gates``: ``model/net=attention_unet ~model/net/skip_gate``, the same net with plain skips
  (``attention_unet / attention_unet_no_gates`` is what the gates cost).
* ``unet``: ours, ``model/net=unet`` (the classic U-Net: plain skips and two convs per decoder level).
* ``monai_attention_unet``: ``monai.networks.nets.AttentionUnet(channels=widths, strides=(2,) * (len(widths) - 1))``;
  its ``channels`` are all levels including the bottleneck, like ours.
* ``monai_basic_unet``: ``monai.networks.nets.BasicUNet(features=...)``. BasicUNet always has 5 encoder levels (4
  downsamplings) plus a last decoder width, so the widths are left-padded with ``w0``: 16 32 64 128 becomes
  (16, 16, 32, 64, 128, 16). It therefore has one more (full-resolution) level than ours, and uses instance norm.
* ``nnunet_plain``: nnU-Net's own ``PlainConvUNet`` as nnU-Net's 3d_fullres plans build it for the patch (128^3: 6
  stages, widths 32 64 128 256 320 320; ``scripts/bench_peers.py``); needs ``dynamic-network-architectures``
  (``pip install -e ".[bench]"``), else it is skipped with a message.
* ``monai_dynunet``: MONAI's ``DynUNet`` at nnU-Net's widths, depth, kernels and strides.
* ``attention_unet_nnunet_widths``: ours at nnU-Net's widths and depth (``model.net.channels`` = nnU-Net's widths):
  the matched comparison with the two above (``--widths`` does not apply to these three).

Every net also gets its FLOPs per train step (one extra step under ``torch.utils.flop_counter``, convolutions and
matmuls, forward + backward) and its MFU: FLOPs / median step time / the peak of ``bench_peers.peak_flops`` (on a
GPU the card's dense bf16 peak by name, H100 SXM and H200 989 TFLOP/s; on a CPU a measured fp32 matmul rate).

One train step = forward + ``DiceCELoss(to_onehot_y=True, softmax=True)`` + backward + ``AdamW.step``, on fresh random
inputs (``randn``) and random integer labels each step, outside the timed region. Before timing, the first warm-up
step checks that every net returns ``(B, classes, P, P, P)`` logits and a finite loss.

Timing: median, min and max of ``--repeats`` steps after ``--warmup`` steps. CUDA: ``torch.cuda.Event`` timing and
``torch.cuda.max_memory_allocated`` over the timed steps (includes weights, optimizer state and inputs; the peak of
the warm-up steps, which includes cuDNN's autotuning workspaces, is reported separately). CPU: wall time
(``time.perf_counter``) and the peak resident-set growth (``VmHWM`` of ``/proc/self/status`` minus the RSS before
the net is built); ``VmHWM`` is process-wide, so on CPU every net runs in a fresh subprocess of this script
(``--_single NET``).

Examples::

    # quick CPU smoke test
    python scripts/bench_train.py --device cpu --patch 32 --warmup 1 --repeats 2
    # CPU defaults: widths 32 64 128 256, batch 2, patch 64, fp32, 5 repeats
    python scripts/bench_train.py --device cpu --threads 2 --json /tmp/bench_cpu.json
    # our nets through torch.compile (the first-step time, compile included, is reported separately)
    python scripts/bench_train.py --device cpu --compile --nets attention_unet monai_attention_unet
    # GPU defaults: widths 32 64 128 256, batch 2, patch 128, bf16 autocast, 20 repeats (the issue's targets)
    python scripts/bench_train.py --json bench_gpu.json
    # what each speed choice of attention_unet buys (the textbook form: gate with W, two convs per decoder level)
    python scripts/bench_train.py --device cpu --nets attention_unet \\
        --override model/net/skip_gate=attention model/net/decoder_block=double_conv model.net.channels_last=false
    # only the two attention U-Nets
    python scripts/bench_train.py --nets attention_unet monai_attention_unet
    # CPU: also GFLOP per step and the convolutions' own time (the ratio if all else were free)
    python scripts/bench_train.py --device cpu --threads 2 --profile --nets attention_unet monai_attention_unet

``--profile`` (CPU) runs two more steps per net after the timed ones: one under ``torch.utils.flop_counter`` (GFLOP
of forward + backward, convolutions and matmuls), one under ``torch.profiler`` summing the self time of every
convolution op (``aten::*conv*``, forward and backward). ``conv s`` / the step time is the convolutions' share, and
for each ratio ``MONAI net / ours`` the report adds MONAI's step time over our convolution time: the ratio ours would
reach if everything but its convolutions took no time at all (an upper bound with our convolutions as they are).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bench_peers
import torch
from torch import nn

NETS = (
    "attention_unet", "attention_unet_no_gates", "unet", "monai_attention_unet", "monai_basic_unet",
    "attention_unet_nnunet_widths", "nnunet_plain", "monai_dynunet",
)  # fmt: skip
# (name, numerator net, denominator net): time ratios reported when both nets ran.
RATIOS = (
    ("monai_attention_unet / attention_unet", "monai_attention_unet", "attention_unet"),
    ("attention_unet / attention_unet_no_gates", "attention_unet", "attention_unet_no_gates"),
    ("attention_unet / unet", "attention_unet", "unet"),
    ("unet / monai_basic_unet", "unet", "monai_basic_unet"),
    ("nnunet_plain / attention_unet_nnunet_widths", "nnunet_plain", "attention_unet_nnunet_widths"),
    ("monai_dynunet / attention_unet_nnunet_widths", "monai_dynunet", "attention_unet_nnunet_widths"),
    ("nnunet_plain / monai_dynunet", "nnunet_plain", "monai_dynunet"),
)


# ----------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the CLI and fill the device-dependent defaults."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    p.add_argument(
        "--widths", type=int, nargs="+", default=[32, 64, 128, 256], help="widths per level (default 32 64 128 256)"
    )
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=None, help="cubic patch edge; default 64 (CPU), 128 (GPU)")
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=None, help="default 5 (CPU), 20 (GPU)")
    p.add_argument("--amp", choices=("bf16", "none"), default=None, help="default bf16 (GPU), none (CPU)")
    p.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--override",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides for our nets, e.g. model/net/decoder_block=double_conv model.net.channels_last=false",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile our nets (model.compile=true); MONAI's stay eager"
    )
    p.add_argument(
        "--profile", action="store_true", help="CPU: also GFLOP per step and the convolutions' own time (see above)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--_single", choices=NETS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.profile and args.device != "cpu":
        p.error("--profile measures CPU op times only (use --device cpu)")
    gpu = args.device == "cuda"
    args.patch = args.patch or (128 if gpu else 64)
    args.repeats = args.repeats or (20 if gpu else 5)
    args.amp = args.amp or ("bf16" if gpu else "none")
    if len(args.widths) < 2 or len(args.widths) > 5:
        p.error("--widths needs 2 to 5 levels (BasicUNet has 5 encoder levels)")
    div = 16 if "monai_basic_unet" in args.nets else 2 ** (len(args.widths) - 1)
    if args.patch % div or args.patch < 2 * div:
        p.error(f"--patch must be a multiple of {div} and >= {2 * div} (the coarsest level needs > 1 voxel)")
    return args


# ---------------------------------------------------------------------------------------------------------- nets
def basic_unet_features(widths: Sequence[int]) -> tuple[int, ...]:
    """Map our widths (finest first, bottleneck last) onto BasicUNet's 6 features, left-padding with ``w0``."""
    enc = [widths[0]] * (5 - len(widths)) + list(widths)
    return (*enc, widths[0])


def _ours(
    variant: str, args: argparse.Namespace, extra: Sequence[str] = (), widths_list: Sequence[int] | None = None
) -> nn.Module:
    from medseg.config import build, compose_config

    widths = "[" + ",".join(map(str, widths_list or args.widths)) + "]"
    overrides = [
        f"model/net={variant}",
        "model.net.spatial_dims=3",
        f"model.net.channels={widths}",
        f"data.num_classes={args.classes}",
        "data.in_channels=1",
        *extra,
        *args.override,
    ]
    return build(compose_config("train", overrides).model.net)


def build_net(name: str, args: argparse.Namespace) -> tuple[nn.Module, str]:
    """The net called ``name`` and a one-line description of how it was configured."""
    from monai.networks.nets import AttentionUnet, BasicUNet

    w = tuple(args.widths)
    if name == "nnunet_plain":
        return bench_peers.plain_conv_unet(args.patch, args.classes)
    if name == "monai_dynunet":
        return bench_peers.dyn_unet(args.patch, args.classes)
    if name == "attention_unet_nnunet_widths":
        nn_widths = bench_peers.nnunet_plan(args.patch)["features"]
        net = _ours("attention_unet", args, widths_list=nn_widths)
        return net, f"medseg config model/net=attention_unet, channels={nn_widths} (nnU-Net's widths and depth)"
    if name == "attention_unet_no_gates":  # the same net with plain skips: what the gates cost
        net = _ours("attention_unet", args, ["~model/net/skip_gate"])
        return net, f"medseg config model/net=attention_unet ~model/net/skip_gate, channels={list(w)}"
    if name in ("attention_unet", "unet"):
        return _ours(name, args), f"medseg config model/net={name}, channels={list(w)}"
    if name == "monai_attention_unet":
        strides = (2,) * (len(w) - 1)
        att = AttentionUnet(spatial_dims=3, in_channels=1, out_channels=args.classes, channels=w, strides=strides)
        return att, f"monai AttentionUnet channels={w} strides={strides}"
    features = basic_unet_features(w)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=args.classes, features=features)
    return net, f"monai BasicUNet features={features}"


# ------------------------------------------------------------------------------------------------------- measure
def _rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (0 where /proc is missing)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> None:
    """Reset the process's peak RSS to its current RSS (Linux >= 4.0; harmless elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _batch(args: argparse.Namespace, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (args.batch, 1, *(args.patch,) * 3)
    x = torch.randn(shape, generator=gen).to(args.device)
    y = torch.randint(0, args.classes, shape, generator=gen).to(args.device)
    return x, y


def make_step(net: nn.Module, args: argparse.Namespace) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A closure doing one train step (forward, Dice-CE, backward, AdamW) and returning the logits."""
    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    amp = args.amp == "bf16"

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        logits = out[0] if isinstance(out, (list, tuple)) else out
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        step.last_loss = loss.detach()  # type: ignore[attr-defined]
        return logits

    return step


def _check(name: str, logits: torch.Tensor, loss: torch.Tensor, args: argparse.Namespace) -> None:
    expected = (args.batch, args.classes, *(args.patch,) * 3)
    if tuple(logits.shape) != expected:
        raise RuntimeError(f"{name}: output shape {tuple(logits.shape)} != expected {expected}")
    if not torch.isfinite(loss).item():
        raise RuntimeError(f"{name}: non-finite loss {loss.item()}")


def _timed(step: Callable, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    """Seconds taken by one step."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        step(x, y)
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    step(x, y)
    return time.perf_counter() - t0


def _mem_start(device: str) -> int:
    if device == "cuda":
        gc.collect()  # the previous net's tensors, if anything kept them alive in a cycle
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return 0
    _reset_hwm()
    return _rss_kib("VmRSS") * 1024


def _mem_peak(device: str, start: int) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return _rss_kib("VmHWM") * 1024 - start


def _warm_libraries(args: argparse.Namespace) -> None:
    """Lazy imports and backend set-up (oneDNN/cuDNN, loss, optimizer) before the memory baseline: not the net's."""
    import monai.networks.nets  # noqa: F401

    import medseg.config  # noqa: F401

    tiny = nn.Conv3d(1, args.classes, 3, padding=1).to(args.device)
    x = torch.randn(1, 1, 8, 8, 8, device=args.device)
    make_step(tiny, args)(x, torch.randint(0, args.classes, x.shape, device=args.device))


def bench_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build, sanity-check, warm up and time one net in this process."""
    _warm_libraries(args)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    mem0 = _mem_start(args.device)
    net, desc = build_net(name, args)
    if args.override and not name.startswith("monai_"):
        desc += ", overrides " + " ".join(args.override)
    net = net.to(args.device).train()
    compiled = args.compile and not name.startswith("monai_")
    step = make_step(torch.compile(net) if compiled else net, args)
    compile_s = None
    for i in range(max(args.warmup, 1)):
        start = time.perf_counter()
        logits = step(*_batch(args, gen))
        if i == 0:
            compile_s = time.perf_counter() - start if compiled else None  # first step = compile + one step
            _check(name, logits, step.last_loss, args)  # type: ignore[attr-defined]
        del logits
    warmup_peak = _mem_peak(args.device, mem0)
    if args.device == "cuda":  # the timed steps' own peak: cuDNN's autotuning (benchmark=True) tries workspaces
        torch.cuda.reset_peak_memory_stats()  # during the warm-up only; live tensors stay counted
    times = []
    for _ in range(args.repeats):
        x, y = _batch(args, gen)
        times.append(_timed(step, x, y, args.device))
    med = statistics.median(times)
    prof = profile_step(step, *_batch(args, gen)) if args.profile else {}
    flops = bench_peers.step_flops(step, *_batch(args, gen))  # one more step, counted
    return prof | {
        "flops_per_step": flops,
        "net": name,
        "config": desc,
        "params": sum(p.numel() for p in net.parameters()),
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "voxels_per_s": args.batch * args.patch**3 / med,
        "peak_mem_bytes": _mem_peak(args.device, mem0),
        "peak_mem_warmup_bytes": warmup_peak,
        "peak_mem_kind": "cuda max_memory_allocated" if args.device == "cuda" else "RSS high-water growth",
        "final_loss": float(step.last_loss),  # type: ignore[attr-defined]
        "compiled": compiled,
        "first_step_s": compile_s,
    }


def profile_step(step: Callable, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """GFLOP of one step (flop counter) and the self time of its convolution ops (profiler), one extra step each."""
    from torch.profiler import ProfilerActivity, profile

    gflop = bench_peers.step_flops(step, x, y) / 1e9
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step(x, y)
        profiled_s = time.perf_counter() - t0
    conv_us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key.startswith("aten::") and "conv" in e.key)
    return {"gflop": gflop, "conv_s": conv_us / 1e6, "profiled_step_s": profiled_s}


def _child_argv(args: argparse.Namespace, name: str, out: Path) -> list[str]:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--device",
        args.device,
        "--widths",
        *map(str, args.widths),
        "--batch",
        str(args.batch),
        "--patch",
        str(args.patch),
        "--classes",
        str(args.classes),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--amp",
        args.amp,
        "--seed",
        str(args.seed),
        "--nets",
        name,
        "--_single",
        name,
        "--json",
        str(out),
    ]
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--override", *args.override] if args.override else []
    argv += ["--profile"] if args.profile else []
    return argv + (["--compile"] if args.compile else [])


def bench_subprocess(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one net in a fresh interpreter (so the RSS high-water mark is its own)."""
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run(_child_argv(args, name, out), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return json.loads(out.read_text())


# -------------------------------------------------------------------------------------------------------- report
def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    """What ran the benchmark."""
    import monai

    cpu = "unknown"
    with contextlib.suppress(OSError):
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor() or "unknown",
        )
    info = {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if args.device == "cuda":
        info |= {
            "gpu": torch.cuda.get_device_name(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Median-time ratios between the nets that ran."""
    return {
        label: results[a]["median_s"] / results[b]["median_s"]
        for label, a, b in RATIOS
        if a in results and b in results
    }


def conv_bounds(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """For each ratio MONAI net / ours: MONAI's median step over our convolution time alone (``--profile``)."""
    return {
        label: results[a]["median_s"] / results[b]["conv_s"]
        for label, a, b in RATIOS
        if a.startswith("monai_") and a in results and "conv_s" in results.get(b, {})
    }


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def print_table(title: str, head: list[str], rows: list[list[str]]) -> None:
    """A table with rich if installed, else plain text; the first column left-aligned, the others right-aligned."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print(title)
        for row in (head, *rows):
            cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            print("  ".join(cells))
        return
    print(title)
    table = Table()
    for i, h in enumerate(head):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=max(Console().width, 120)).print(table)


def print_report(results: dict[str, dict[str, Any]], args: argparse.Namespace, machine: dict[str, Any]) -> None:
    """The results table, the configs used and the time ratios."""
    cuda = args.device == "cuda"
    head = ["net", "params", "median", "min", "max", "Mvox/s", "peak mem"] + (["peak mem (warm-up)"] if cuda else [])
    head += ["GFLOP/step", "TFLOP/s", "MFU"]
    rows = [
        [
            r["net"],
            f"{r['params'] / 1e6:.2f}M",
            _fmt_time(r["median_s"]),
            _fmt_time(r["min_s"]),
            _fmt_time(r["max_s"]),
            f"{r['voxels_per_s'] / 1e6:.3g}",
            _fmt_bytes(r["peak_mem_bytes"]),
        ]
        + ([_fmt_bytes(r["peak_mem_warmup_bytes"])] if cuda else [])
        + [
            f"{r['flops_per_step'] / 1e9:.3g}",
            f"{r['flops_per_step'] / r['median_s'] / 1e12:.3g}",
            f"{r['mfu']:.1%}" if r.get("mfu") is not None else "",
        ]
        for r in results.values()
    ]
    title = (
        f"train step, {args.device} ({machine.get('gpu', machine['cpu'])}, {machine['torch_threads']} threads), "
        f"batch {args.batch} x 1 x {args.patch}^3, {args.classes} classes, amp {args.amp}, "
        f"{args.warmup} warm-up + {args.repeats} repeats"
    )
    print_table(title, head, rows)
    print(f"  MFU = FLOPs per step (torch.utils.flop_counter) / median step / {machine['peak_flops_kind']}")
    for r in results.values():
        first = f"; compiled, first step (compile + step) {r['first_step_s']:.0f} s" if r.get("compiled") else ""
        print(f"  {r['net']}: {r['config']}{first}")
    for r in results.values():
        if "conv_s" in r:
            print(
                f"  {r['net']}: {r['gflop']:.0f} GFLOP/step; convolutions {r['conv_s']:.2f} s of a "
                f"{r['profiled_step_s']:.2f} s profiled step ({r['conv_s'] / r['profiled_step_s']:.0%}), "
                f"{r['gflop'] / r['profiled_step_s']:.0f} GFLOP/s over the step"
            )
    for label, value in ratios(results).items():
        print(f"  time ratio {label}: {value:.2f}")
    for label, value in conv_bounds(results).items():
        print(f"  time ratio {label} if all but the denominator's convolutions took no time: <= {value:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    if args._single:
        result = bench_one(args._single, args)
        args.json.write_text(json.dumps(result))
        return 0
    results, failed, skipped = {}, {}, {}
    if "nnunet_plain" in args.nets and not bench_peers.nnunet_available():
        print(bench_peers.SKIP_NNUNET, flush=True)
        skipped["nnunet_plain"] = bench_peers.SKIP_NNUNET
    for name in (n for n in args.nets if n not in skipped):
        print(f"benchmarking {name} ...", flush=True)
        try:  # one net failing (out of memory, say) still leaves the others' rows
            results[name] = bench_subprocess(name, args) if args.device == "cpu" else bench_one(name, args)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            failed[name] = str(exc)[-2000:]
            print(f"  {name} FAILED: {failed[name]}", flush=True)
            if args.device == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
    machine = machine_info(args)
    machine["peak_flops"], machine["peak_flops_kind"] = bench_peers.peak_flops(args.device)
    for r in results.values():
        r["mfu"] = r["flops_per_step"] / r["median_s"] / machine["peak_flops"] if machine["peak_flops"] else None
    print_report(results, args, machine)
    if args.json:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "_single"}
        payload = {
            "machine": machine,
            "settings": settings,
            "results": results,
            "failed": failed,
            "skipped": skipped,
            "ratios": ratios(results),
            "ratio_bounds_conv_only": conv_bounds(results),
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
