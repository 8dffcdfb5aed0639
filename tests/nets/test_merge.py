"""``model.net.merge``: the decoder joins [upsampled, skip] by concatenation (U-Net) or by a sum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medseg.config import build, compose_config
from medseg.nets import UNet

BASE = ["model/net=attention_unet", "model.net.channels=[4,8,16]", "data.num_classes=3", "data.in_channels=1"]


def _net(dims: int, merge: str) -> nn.Module:
    cfg = compose_config("train", [*BASE, f"model.net.spatial_dims={dims}", f"model.net.merge={merge}"])
    return build(cfg.model.net).double()


@pytest.mark.parametrize("dims", [2, 3])
def test_add_equals_cat_with_the_weights_repeated(dims):
    # conv([up, skip]) with weight [W, W] is conv(up + skip) with W: the same net, merge=cat vs merge=add
    torch.manual_seed(0)
    add, cat = _net(dims, "add"), _net(dims, "cat")
    state = add.state_dict()
    conv_keys = {f"decoders.{i}.{name}" for i, d in enumerate(add.decoders) for name in _conv_weight_names(d)}
    cat.load_state_dict({k: v for k, v in state.items() if k not in conv_keys}, strict=False)
    for key in conv_keys:
        conv_c = cat.get_parameter(key)
        assert conv_c.shape[1] == 2 * state[key].shape[1]  # the sum halves what the decoder conv reads
        with torch.no_grad():
            conv_c.copy_(torch.cat([state[key], state[key]], dim=1))
    x = torch.randn(2, 1, *[16] * dims, dtype=torch.float64)
    torch.testing.assert_close(add.eval()(x), cat.eval()(x))
    assert sum(p.numel() for p in add.parameters()) < sum(p.numel() for p in cat.parameters())


def _conv_weight_names(decoder: nn.Module) -> list[str]:
    return [f"{n}.weight" for n, m in decoder.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]


def test_merge_is_validated():
    with pytest.raises(ValueError, match="merge must be cat or add"):
        UNet(spatial_dims=2, channels=[4, 8, 16], merge="max")
    with pytest.raises(ValueError, match="up_channels"):
        UNet(spatial_dims=2, channels=[4, 8, 16], merge="add", up_channels=[2, 4])
