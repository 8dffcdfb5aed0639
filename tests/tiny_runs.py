"""Overrides of a tiny, fast training run shared by the workflow and reliability tests (imported as ``tiny_runs``)."""

from pathlib import Path


def tiny_train_overrides(root: Path, epochs: int, every: int = 1) -> list[str]:
    """A 3-level U-Net (8/16/32) on 16³ patches at 2 mm of the MSD dataset at ``root``, no progress bar, no planning
    (the fixed tiny recipe), light augmentation."""
    return [
        "data=nifti",
        "data/augment=light",
        "plan.enabled=false",
        f"data.root={root}",
        "model/net=unet",
        "model.net.channels=[8,16,32]",
        "data.patch_size=[16,16,16]",
        "data.spacing=[2.0,2.0,2.0]",
        "data.val_fraction=0.34",
        "data.num_workers=0",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={every}",
        "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
    ]
