#!/usr/bin/env python
"""Zoo table: parameters, FLOPs and CPU train-step time of every network config in ``configs/model/net/``.

Each net is built from its packaged Hydra config (``model/net=<name>``, its default widths) with ``--in-channels`` and
``--classes`` (default 1 → 2), once with ``model.net.spatial_dims=2`` and once with ``=3``. Per net and dimension:

* params: trainable parameters;
* GFLOPs: one forward pass (eval mode, batch 1) at the stated input, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (conv / matmul / attention FLOPs = 2 × multiply-adds; norms,
  activations and pooling are not counted);
* train step: median wall time of ``--repeats`` steps after ``--warmup`` steps on the CPU, one step = forward (train
  mode) + cross-entropy on every output (deep-supervision heads against nearest-resized labels) + backward +
  ``Adam.step``, batch ``--batch``, fresh ``randn`` input and random labels per step (outside the timed region).

The first line of each config's comment describes the net; the sources are listed in ``SOURCES`` below.

Examples::

    python scripts/zoo_table.py                          # all nets, 2D 128², 3D 32³, batch 2, 3 repeats
    python scripts/zoo_table.py --threads 1 --write docs/zoo.md --json /tmp/zoo.json
    python scripts/zoo_table.py --nets mk_unet sa_unet --size2d 256
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medseg.config import build, compose_config, config_dir

SOURCES = {
    "unet": "Ronneberger et al. 2015; Çiçek et al. 2016 (3D)",
    "attention_unet": "Oktay et al. 2018, Attention U-Net",
    "ms_attention_unet": "Abraham & Khan 2018 (ISBI 2019); Haseljić, Chatterjee et al. (Turbolift)",
    "mk_unet": "Rahman & Marculescu, MK-UNet",
    "ag_unet": "Bouget et al., AGUNet (meningioma MRI)",
    "da_unet": "Bouget et al., DAUNet; Fu et al. 2019, DANet",
    "sa_unet": "Guo et al. 2021, SA-UNet; Ghiasi et al. 2018, DropBlock",
    "res2net_unet": "Gao et al. 2021, Res2Net",
    "mbd_unet": "MBDRes-U-Net (multi-branch dilated residual, BraTS); Woo et al. 2018, CBAM",
    "na_unet": "Hassani et al. 2023, NAT / NATTEN; Oktay et al. 2018",
}
BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--nets", nargs="+", default=None, help="config names (default: every configs/model/net/*.yaml)")
    p.add_argument("--size2d", type=int, default=128, help="2D input edge")
    p.add_argument("--size3d", type=int, default=32, help="3D input edge")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--batch", type=int, default=2, help="train-step batch (FLOPs use batch 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--write", type=Path, default=None, help=f"replace the table between {BEGIN} / {END} in this file")
    return p.parse_args(argv)


def net_names() -> list[str]:
    """Every network config (top-level YAML files of configs/model/net/)."""
    return sorted(p.stem for p in (config_dir() / "model" / "net").glob("*.yaml"))


def describe(name: str) -> str:
    """The first sentence of the config's leading comment."""
    lines = (config_dir() / "model" / "net" / f"{name}.yaml").read_text().splitlines()
    comment = " ".join(line.lstrip("# ").strip() for line in lines if line.startswith("#"))
    return re.split(r"(?<=\.)(?<!al\.)\s+(?=[A-Z0-9])", comment, maxsplit=1)[0] if comment else ""  # not "et al. 2018"


def build_net(name: str, dims: int, args: argparse.Namespace) -> nn.Module:
    """The net of config ``name`` at ``dims`` spatial dimensions."""
    overrides = [f"model/net={name}", f"data.in_channels={args.in_channels}", f"data.num_classes={args.classes}"]
    cfg = compose_config("train", [*overrides, f"model.net.spatial_dims={dims}"])
    return build(cfg.model.net)


def count_flops(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one eval-mode forward pass."""
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x)
    return int(counter.get_total_flops())


def step_loss(out: torch.Tensor | list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the outputs; coarser deep-supervision outputs get nearest-resized labels."""
    outs = out if isinstance(out, list) else [out]
    losses = []
    for o in outs:
        lab = F.interpolate(labels[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long()
        losses.append(F.cross_entropy(o, lab))
    return torch.stack(losses).mean()


def train_step_seconds(net: nn.Module, shape: tuple[int, ...], args: argparse.Namespace) -> list[float]:
    """Wall times of ``args.repeats`` train steps after ``args.warmup`` steps."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    times = []
    for i in range(args.warmup + args.repeats):
        x = torch.randn(shape)
        labels = torch.randint(0, args.classes, (shape[0], *shape[2:]))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_loss(net(x), labels)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()}")
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One table row: both dimensions of one net."""
    row: dict[str, Any] = {"net": name, "what": describe(name), "source": SOURCES.get(name, "—")}
    for dims, edge in ((2, args.size2d), (3, args.size3d)):
        torch.manual_seed(args.seed)
        net = build_net(name, dims, args)
        row[f"params_{dims}d"] = sum(p.numel() for p in net.parameters() if p.requires_grad)
        row[f"gflops_{dims}d"] = count_flops(net, torch.randn(1, args.in_channels, *[edge] * dims)) / 1e9
        times = train_step_seconds(net, (args.batch, args.in_channels, *[edge] * dims), args)
        row[f"step_ms_{dims}d"] = 1e3 * statistics.median(times)
        print(
            f"  {name} {dims}D: {row[f'params_{dims}d']:,} params, {row[f'gflops_{dims}d']:.3f} GFLOPs, "
            f"{row[f'step_ms_{dims}d']:.0f} ms/step",
            flush=True,
        )
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The table with a line stating how it was measured."""
    s2, s3 = f"{args.size2d}²", f"{args.size3d}³"
    head = (
        f"| net | what it is | source | params 2D | GFLOPs 2D ({s2}) | step 2D (ms) | params 3D | "
        f"GFLOPs 3D ({s3}) | step 3D (ms) |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
    )
    body = [
        f"| `{r['net']}` | {r['what']} | {r['source']} | {r['params_2d'] / 1e6:.3f}M | {r['gflops_2d']:.3f} | "
        f"{r['step_ms_2d']:.0f} | {r['params_3d'] / 1e6:.3f}M | {r['gflops_3d']:.3f} | {r['step_ms_3d']:.0f} |"
        for r in rows
    ]
    note = (
        f"\n\nDefault widths of each config; {args.in_channels} input channel(s) → {args.classes} classes. GFLOPs: one "
        f"forward, batch 1 (FlopCounterMode, 2 × multiply-adds). Step: median CPU train step (forward + CE + backward "
        f"+ Adam), batch {args.batch}, {args.repeats} repeats after {args.warmup} warm-up, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}."
        f" Regenerate: `python scripts/zoo_table.py --threads {torch.get_num_threads()} --write docs/zoo.md`."
    )
    return "\n".join([head, *body]) + note


def write_into(path: Path, table: str) -> None:
    """Replace the text between the BEGIN/END markers of ``path`` by ``table``."""
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} markers")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + table + "\n" + text[end:])


def main(argv: Sequence[str] | None = None) -> None:
    """Measure every net, print the table, optionally write JSON and update a markdown file."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.nets or net_names()
    unknown = sorted(set(names) - set(net_names()))
    if unknown:
        raise SystemExit(f"unknown net configs: {unknown}; available: {net_names()}")
    rows = [measure(name, args) for name in names]
    table = markdown(rows, args)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    if args.write:
        write_into(args.write, table)


if __name__ == "__main__":
    main()
