import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss

from medseg.training.losses import FocalTverskyLoss, deep_supervision_weights, split_zero_heads, with_deep_supervision


def _target(size: int = 32, dims: int = 2) -> torch.Tensor:
    t = torch.zeros(2, 1, *[size] * dims)
    t[..., : size // 2] = 1
    t[:, :, : size // 4] = 2
    return t


def _logits_for(target: torch.Tensor, n_classes: int = 3, scale: float = 100.0) -> torch.Tensor:
    onehot = F.one_hot(target[:, 0].long(), n_classes).movedim(-1, 1).float()
    return (2 * onehot - 1) * scale


@pytest.mark.parametrize("dims", [2, 3])
def test_focal_tversky_perfect_prediction_is_zero(dims):
    target = _target(16 if dims == 3 else 32, dims)
    loss = FocalTverskyLoss()(_logits_for(target), target)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(0.0, abs=1e-4)


def test_focal_tversky_totally_wrong_prediction_is_one():
    target = _target()
    wrong = (target + 1) % 3  # every voxel gets another class
    loss = FocalTverskyLoss()(_logits_for(wrong), target)
    assert loss.item() == pytest.approx(1.0, abs=0.01)
    assert loss.item() <= 1.0


def test_focal_tversky_matches_formula():
    torch.manual_seed(0)
    target = _target(8)
    logits = torch.randn(2, 3, 8, 8)
    alpha, beta, gamma = 0.3, 0.7, 4 / 3
    p = torch.softmax(logits, 1)
    g = F.one_hot(target[:, 0].long(), 3).movedim(-1, 1).float()
    tp = (p * g).sum((2, 3))
    fp = (p * (1 - g)).sum((2, 3))
    fn = ((1 - p) * g).sum((2, 3))
    ti = (tp + 1) / (tp + alpha * fp + beta * fn + 1)
    expected = ((1 - ti) ** (1 / gamma)).mean()
    got = FocalTverskyLoss(alpha=alpha, beta=beta, gamma=gamma)(logits, target)
    torch.testing.assert_close(got, expected)
    no_bg = FocalTverskyLoss(alpha=alpha, beta=beta, gamma=gamma, include_background=False)(logits, target)
    torch.testing.assert_close(no_bg, ((1 - ti[:, 1:]) ** (1 / gamma)).mean())


def test_focal_tversky_sigmoid_binary_and_gradient():
    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1
    logits = torch.zeros(1, 1, 16, 16, requires_grad=True)
    loss = FocalTverskyLoss(softmax=False)(logits, target)
    assert 0.0 < loss.item() < 1.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    perfect = FocalTverskyLoss(softmax=False)((2 * target - 1) * 100, target)
    assert perfect.item() == pytest.approx(0.0, abs=1e-4)


def test_deep_supervision_weights():
    # default: 1/2^i over every output, normalised — no head is left without gradient
    assert deep_supervision_weights(4) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    # nnU-Net's weighting stays available: the coarsest of >= 3 outputs at 0
    assert deep_supervision_weights(4, "nnunet") == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    assert deep_supervision_weights(2, "nnunet") == pytest.approx([2 / 3, 1 / 3])
    assert deep_supervision_weights(2, [3.0, 1.0]) == pytest.approx([0.75, 0.25])
    with pytest.raises(ValueError, match="2 entries but the network has 3"):
        deep_supervision_weights(3, [1.0, 1.0])
    with pytest.raises(ValueError, match="must be null, halving or nnunet"):
        deep_supervision_weights(3, "equal")


def test_zero_weight_heads_are_split_off_only_at_the_coarse_end():
    assert split_zero_heads([0.5, 0.25, 0.25, 0.0]) == (pytest.approx([0.5, 0.25, 0.25]), 1)
    assert split_zero_heads([1.0, 0.0, 0.0]) == ([1.0], 2)
    assert split_zero_heads([0.5, 0.5]) == ([0.5, 0.5], 0)
    with pytest.raises(ValueError, match="leaves its head untrained"):
        split_zero_heads([0.5, 0.0, 0.5])


def test_with_single_output_is_the_plain_loss():
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    assert with_deep_supervision(base, 1) is base


def _ds_case(dims: int):
    torch.manual_seed(0)
    coarse = torch.randint(0, 3, (2, 1, *[4] * dims)).float()
    target = coarse
    for d in range(2, 2 + dims):
        target = target.repeat_interleave(4, dim=d)  # 16^dims, constant on 4-blocks → exact nearest downsampling
    outs = [torch.randn(2, 3, *[16 // 2**i] * dims, requires_grad=True) for i in range(3)]
    targets = []
    for i in range(3):
        t = coarse
        for d in range(2, 2 + dims):
            t = t.repeat_interleave(4 // 2**i, dim=d)
        targets.append(t)
    return outs, target, targets


@pytest.mark.parametrize("dims", [2, 3])
def test_deep_supervision_loss_is_weighted_sum(dims):
    outs, target, targets = _ds_case(dims)
    base = DiceCELoss(to_onehot_y=True, softmax=True)
    wrapped = with_deep_supervision(base, 3)
    loss = wrapped(outs, target)
    assert loss.ndim == 0 and torch.isfinite(loss)
    w = deep_supervision_weights(3)
    by_hand = sum(wi * base(o, t) for wi, o, t in zip(w, outs, targets, strict=True))
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    assert all(o.grad.abs().sum() > 0 for o in outs)  # every output, the coarsest included, gets a gradient


def test_deep_supervision_custom_weights():
    outs, target, targets = _ds_case(2)
    base = FocalTverskyLoss()
    loss = with_deep_supervision(base, 3, weights=[0.5, 0.3, 0.2])(outs, target)
    by_hand = 0.5 * base(outs[0], targets[0]) + 0.3 * base(outs[1], targets[1]) + 0.2 * base(outs[2], targets[2])
    torch.testing.assert_close(loss, by_hand)
