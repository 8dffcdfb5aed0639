import pytest
import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss
from torch import nn

from medseg.config import build, compose_config
from medseg.training.module import SegmentationModule


def _module(extra: list[str], roi: list[int]) -> SegmentationModule:
    cfg = compose_config(
        "train", ["model/net=unet", "model.net.channels=[4,8,16]", "data.num_classes=3", "data.in_channels=1", *extra]
    )
    return build(cfg.model, roi_size=roi)


def test_training_step_with_deep_supervision():
    module = _module(["model.net.deep_supervision=1", "model.net.spatial_dims=3"], [16, 16, 16])
    assert isinstance(module.loss, DeepSupervisionLoss)
    assert "net" not in module.hparams and "loss" not in module.hparams  # no modules in hyperparameters
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 3, (2, 1, 16, 16, 16)).float()}
    module.train()
    module.log = lambda *a, **k: None  # no Trainer attached
    loss = module.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for p in module.net.parameters())


def test_predict_volume_2d_net_slides_over_slices():
    module = _module(["model.net.spatial_dims=2"], [16, 16, 1]).eval()
    assert module.is_2d
    probs = module.predict_volume(torch.randn(1, 1, 20, 24, 5))
    assert tuple(probs.shape) == (1, 3, 20, 24, 5)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 20, 24, 5))


class _Oracle(nn.Module):
    """Logits equal to the one-hot of the (integer-valued) image: a perfect segmenter when image == label."""

    spatial_dims = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0].round().long(), 3).movedim(-1, 1).float() * 10


def test_validation_dice_perfect_and_empty_classes():
    module = SegmentationModule(
        _Oracle(), nn.Identity(), optimizer=torch.optim.SGD, num_classes=3, roi_size=[8, 8, 8], sw_batch_size=2
    )
    module.log = lambda *a, **k: None  # no Trainer attached
    label = torch.zeros(1, 1, 12, 10, 9)
    label[..., 2:6, 2:6, 2:6] = 1
    module.validation_step({"image": label.clone(), "label": label, "case": ["a"]}, 0)  # class 2 absent
    label2 = label.clone()
    label2[..., 8:10, 5:8, 5:8] = 2
    module.validation_step({"image": label2.clone(), "label": label2, "case": ["b"]}, 1)
    module.on_validation_epoch_end()
    assert module.last_val["cases"] == ["a", "b"]
    assert module.last_val["per_class"] == pytest.approx([1.0, 1.0])
    per_case = module.last_val["per_case"]
    assert per_case[0][0] == pytest.approx(1.0) and per_case[0][1] is None  # absent in both: no score (JSON null)


def test_validation_and_evaluation_share_one_empty_class_rule():
    """Issue 17, item 9: absent from both → no score (not 1); only predicted → 0 — the same in the validation Dice
    that selects checkpoints and in ``medseg evaluate``."""
    import numpy as np

    from medseg.evaluation.metrics import case_metrics
    from medseg.training.module import dice_per_class

    label = torch.zeros(3, 1, 6, 6, 4, dtype=torch.long)
    pred = torch.zeros_like(label)
    label[0, :, :3], pred[0, :, 1:4] = 1, 1  # case 0: class 1 overlaps 2/3 → Dice 2/3; class 2 absent in both
    pred[1, :, :2, :2] = 2  # case 1: class 2 only predicted (false positive) → 0; class 1 absent in both
    label[2, :, 3:], pred[2, :, 3:] = 2, 2  # case 2: class 2 perfect; class 1 absent in both
    got = dice_per_class(pred, label, 3)
    expected = torch.tensor([[2 / 3, float("nan")], [float("nan"), 0.0], [float("nan"), 1.0]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, equal_nan=True)
    for b in range(3):
        ref = case_metrics(pred[b, 0].numpy(), label[b, 0].numpy(), (1.0, 1.0, 1.0), [1, 2])
        ours = [ref[c]["dice"] for c in ("1", "2")]
        assert [None if np.isnan(v) else v for v in got[b].tolist()] == pytest.approx(ours)

    module = SegmentationModule(
        _Oracle(), nn.Identity(), optimizer=torch.optim.SGD, num_classes=3, roi_size=[8, 8, 8], sw_batch_size=2
    )
    logged = {}
    module.log = lambda name, value, **k: logged.__setitem__(name, float(value))  # no Trainer attached
    for b in range(3):
        module.val_scores.append(got[b : b + 1])
    module.val_cases = ["a", "b", "c"]
    module.on_validation_epoch_end()
    # class 1: mean over its one scored case (2/3); class 2: mean of (0, 1) = 0.5; val_dice = mean of the two
    assert module.last_val["per_class"] == pytest.approx([2 / 3, 0.5])
    assert logged["val_dice"] == pytest.approx((2 / 3 + 0.5) / 2) and module.last_val["per_case"][0][1] is None
