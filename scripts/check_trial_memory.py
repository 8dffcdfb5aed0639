#!/usr/bin/env python
"""Compare the planner's CPU memory probe with the measured peak RSS of real CPU training steps.

For each configuration (network, patch, batch) a fresh subprocess builds the network, runs three real training steps
(AdamW; the planner's Dice + CE stand-in loss) and reports how far its peak resident set size (``ru_maxrss``) rose
above the resident size just before the first step (the network built, the input allocated). The probe's figure is
``medseg.planning.trial.measure`` on the ``meta`` device: bytes autograd saves, plus parameters, gradients and AdamW
state, plus twice the largest saved tensor. Prints a table and writes JSON.

Example:
    python scripts/check_trial_memory.py --out trial_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASES = [
    ("unet", [16, 32, 64, 128], None, None, [64, 64, 64], 2),
    ("attention_unet", [16, 32, 64, 128], None, None, [96, 96, 96], 2),
    (
        "unet",
        [16, 32, 64, 128, 256],
        [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]],
        [[3, 3, 1], [3, 3, 1], 3, 3, 3],
        [128, 128, 16],
        2,
    ),  # fmt: skip
    (
        "attention_unet",
        [16, 32, 64, 128, 256, 320],
        [[2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1], [2, 2, 1]],
        [[3, 3, 1], 3, 3, 3, 3, 3],
        [128, 128, 20],
        2,
    ),  # fmt: skip
]

CHILD = r"""
import json, resource, sys, torch
torch.set_num_threads(1)
from omegaconf import OmegaConf
from medseg.config import build, compose_config
from medseg.planning.trial import _loss
name, channels, strides, kernels, patch, batch = json.loads(sys.argv[1])
cfg = compose_config("train", [f"model/net={name}"])
net = OmegaConf.to_container(cfg.model.net, resolve=True)
net.update(channels=channels, strides=strides, kernel_sizes=kernels, in_channels=1, out_channels=3)
model = build(net).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randn(batch, 1, *patch)
def rss():  # current resident set size (bytes)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
before = rss()
for _ in range(3):
    _loss(model(x), 3).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rss_growth": peak - before}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="trial_memory.json", help="JSON output (default trial_memory.json)")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    from medseg.config import compose_config
    from medseg.planning.trial import measure

    rows = []
    print("| network | levels | patch | batch | probe (meta) MiB | peak RSS growth MiB | probe / RSS |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, channels, strides, kernels, patch, batch in CASES:
        cfg = compose_config("train", [f"model/net={name}"])
        net = OmegaConf.to_container(cfg.model.net, resolve=True)
        net.update(channels=channels, strides=strides, kernel_sizes=kernels)
        probe = measure(net, 1, 3, patch, batch, "cpu")
        spec = json.dumps([name, channels, strides, kernels, patch, batch])
        done = subprocess.run([sys.executable, "-c", CHILD, spec], capture_output=True, text=True, check=True)
        rss = json.loads(done.stdout.strip().splitlines()[-1])["rss_growth"]
        row = {"network": name, "levels": len(channels), "patch": patch, "batch": batch, "probe": probe.bytes,
               "rss_growth": rss}  # fmt: skip
        rows.append(row)
        print(f"| {name} | {len(channels)} | {patch} | {batch} | {probe.bytes / 2**20:.0f} | {rss / 2**20:.0f} | "
              f"{probe.bytes / rss:.2f} |")  # fmt: skip
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
