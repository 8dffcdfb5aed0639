"""The augmentation groups (data/augment=nnunet|light|none), nnU-Net epochs of fixed iterations, optimiser recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai import transforms as T

from medseg.config import build, compose_config
from medseg.data.augment import RandRotateScaled, augmentation, describe, settings, spatial_margin
from medseg.data.datamodule import SegDataModule

NNUNET = dict(compose_config("train", ["data=nifti", "data.root=/x", "data/augment=nnunet"]).data.augment)
LIGHT = dict(compose_config("train", []).data.augment)


def test_the_groups_hold_nnunets_probabilities_and_the_first_default():
    assert {k: NNUNET[k] for k in ("rotate", "scale", "noise", "blur", "brightness", "contrast", "lowres")} == {
        "rotate": 0.2, "scale": 0.2, "noise": 0.1, "blur": 0.2, "brightness": 0.15, "contrast": 0.15, "lowres": 0.25,
    }  # fmt: skip
    assert (NNUNET["gamma"], NNUNET["gamma_inverted"], NNUNET["flip"], NNUNET["elastic"]) == (0.3, 0.1, 0.5, 0.0)
    assert LIGHT == {"name": "light", "flip": 0.5, "rotate90": 0.5, "intensity": 0.2, "noise": 0.15}
    none = compose_config("train", ["data/augment=none"]).data.augment
    assert augmentation(dict(none), [8, 8, 8]) == ([8, 8, 8], [])
    assert describe(NNUNET).startswith("nnunet: flip 0.5, noise 0.1, rotate 0.2, scale 0.2")


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(ValueError, match=r"data.augment: unknown key\(s\) \['rotat'\]"):
        settings({"rotat": 0.2})


def test_rotation_and_scaling_sample_a_larger_crop():
    # ±30° rotation: cos 30° + sin 30° = 1.366; scaling up to 1.4: × 1.4 → 1.913 per rotated axis
    assert spatial_margin(settings(NNUNET), [64, 64, 64]) == [math.ceil(64 * 1.3660254 * 1.4)] * 3
    # an anisotropic patch rotates in-plane only: its coarse (last) axis needs no margin
    assert spatial_margin(settings(NNUNET), [64, 64, 16])[2] == 16
    assert spatial_margin(settings(LIGHT), [64, 64, 64]) == [64, 64, 64]


@pytest.mark.parametrize("patch", [[24, 24, 24], [32, 32, 8], [32, 32]])
def test_nnunet_pipeline_gives_the_patch_with_the_original_label_values(patch):
    crop, transforms = augmentation({**NNUNET, "rotate": 1.0, "scale": 1.0, "elastic": 0.5}, patch)
    pipeline = T.Compose(transforms)
    pipeline.set_random_state(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        image = torch.as_tensor(rng.normal(size=(2, *crop)), dtype=torch.float32)
        label = torch.as_tensor(rng.integers(0, 3, size=(1, *crop)), dtype=torch.float32)
        out = pipeline({"image": image, "label": label})
        assert tuple(out["image"].shape) == (2, *patch) and tuple(out["label"].shape) == (1, *patch)
        assert set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0.0, 1.0, 2.0}  # nearest: no new values


def test_in_plane_rotation_keeps_every_slice_a_rotation_of_the_same_slice():
    rotate = RandRotateScaled([16, 16, 4], rotate=1.0, rotate_deg=30, scale=0.0, scale_range=[1, 1], planar=True)
    rotate.set_random_state(seed=3)
    slab = torch.zeros(1, 24, 24, 4)
    slab[0, 8:16, 10:14, :] = 1.0  # the same bar on every slice
    out = rotate({"image": slab, "label": slab.clone()})
    rotate.randomize()
    assert rotate.angles[:2] == [0.0, 0.0] and rotate.angles[2] != 0.0
    image = torch.as_tensor(out["image"])
    for z in range(1, 4):
        torch.testing.assert_close(image[..., z], image[..., 0])  # nothing mixed across slices


def test_fixed_iterations_per_epoch_draw_cases_with_replacement(tiny_dataset):
    dm = SegDataModule(str(tiny_dataset), spatial_dims=3, spacing=[2, 2, 2], patch_size=[16, 16, 16],
                       batch_size=2, samples_per_volume=1, num_workers=0, cache="none", iters_per_epoch=7)  # fmt: skip
    dm.prepare_dataset(lambda ids: {"train": ids[:4], "val": ids[4:]})
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 7 and loader.sampler.replacement and loader.sampler.num_samples == 14
    with pytest.raises(ValueError, match="data.iters_per_epoch must be >= 1"):
        SegDataModule(str(tiny_dataset), iters_per_epoch=0)


def test_the_python_defaults_are_those_of_data_nifti():
    import inspect

    params = inspect.signature(SegDataModule).parameters
    cfg = compose_config("train", ["data=nifti", "data.root=/x"]).data
    for key in ("patch_size", "patch_size_2d", "batch_size", "samples_per_volume", "pos_fraction", "val_fraction",
                "seed", "cache", "prefetch_factor", "iters_per_epoch", "modality"):  # fmt: skip
        default = params[key].default
        assert (list(default) if isinstance(default, tuple) else default) == cfg[key], key


def test_nnunets_sgd_recipe():
    cfg = compose_config("train", ["model/optimizer=sgd"])
    optimizer = build(cfg.model.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    group = optimizer.param_groups[0]
    assert type(optimizer) is torch.optim.SGD
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (1e-2, 0.99, True, 3e-5)
    adamw = build(compose_config("train", []).model.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["lr"] == 3e-3
