"""``medseg train``: one training run."""

from __future__ import annotations

from typing import Any

from medseg.cli import _hydra
from medseg.cli._workflow import run_workflow
from medseg.run_dir import contents

SUMMARY = "train one model"
USAGE = "medseg train [model/net=unet] [data=nifti data.root=PATH] [key=value ...]"
HELP = f"""usage: {USAGE}

Train one segmentation model and keep its best checkpoint (by validation Dice). With no options it trains the
default attention U-Net on the built-in synthetic demo data (generated once under ~/.cache/medseg).

main options (any config key can be set as key=value):
  data=nifti data.root=PATH      your dataset (MSD task, nnU-Net raw dataset or images/ + labels/ folders)
  model/net=NAME                 the network: unet, attention_unet (default), ms_attention_unet, mk_unet, ...
  trainer.max_epochs=N           training length (default 40); trainer=gpu for a GPU (bf16)
  model.optimizer.lr=X           learning rate
  hydra.run.dir=PATH             where the run directory goes (default runs/train/<date>_<time>)
  (re-running a command with the same hydra.run.dir resumes an interrupted run; a finished one is re-validated)
  seed=N                         random seed

examples:
  medseg train hydra.run.dir=runs/demo
  medseg train data=nifti data.root=/data/Task03_Liver model/net=unet trainer=gpu

see the whole config:  medseg train --cfg job        Hydra's own options:  medseg train --hydra-help
writes into RUN_DIR: {contents("train")} (docs/cli.md)"""


def task(cfg: Any) -> None:
    from medseg.cli.summaries import print_train_summary
    from medseg.workflows.train import train

    run_workflow("train", train, print_train_summary, cfg)


def run(args: list[str]) -> int:
    return _hydra.run("train", args, task, HELP)
