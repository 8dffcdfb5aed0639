"""The U-Net before and after its decoder construction moved to ``medseg/nets/decoder.py`` and per-level strides and
kernel sizes were added: the same state_dict keys and shapes (old checkpoints load) and the same fixed-seed outputs.
With ``decoder_from=concat`` the blocks of levels without an output head are no longer built (issue 17: they fed
nothing and were never trained): there the old keys are the new ones plus those blocks, and a checkpoint holding them
still loads strictly.

``unet_golden.json`` and ``unet2d_before_decoder_split.pt`` were written by the code before the change (commit
90edc5e): for every UNet config of the zoo, a hash of the ``(key, shape)`` list and output sums at seed 0/1.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from test_nets import NET_NAMES, _tiny_overrides

from medseg.config import build, compose_config
from medseg.nets import UNet

HERE = Path(__file__).parent
GOLDEN = json.loads((HERE / "unet_golden.json").read_text())
VARIANTS = {
    "default": [],
    "conv_linear": ["model.net.downsample=conv", "model.net.upsample=linear", "model.net.up_act=relu"],
    "concat_add": ["model.net.decoder_from=concat"],
    "merge_add": ["model.net.merge=add"],
    "upk3_ds": ["+model.net.up_kernel_size=3", "model.net.deep_supervision=2"],
}
CASES = [(n, d, v) for n in NET_NAMES for d in (2, 3) for v in VARIANTS if f"{n}-{d}d-{v}" in GOLDEN]


def test_every_unet_config_has_a_golden_record():
    assert len(CASES) == len(GOLDEN) == 26


@pytest.mark.parametrize(("name", "dims", "variant"), CASES)
def test_same_keys_and_outputs_as_before_the_decoder_split(name, dims, variant):
    cfg = compose_config("train", _tiny_overrides(name, dims) + VARIANTS[variant])
    torch.manual_seed(0)
    net = build(cfg.model.net)
    keys = ";".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())
    torch.manual_seed(1)
    x = torch.randn(2, 1, *[32 if dims == 2 else 16] * dims)
    net.train()
    y = net(x)
    train = [float(t.detach().double().sum()) for t in (y if isinstance(y, list) else [y])]
    net.eval()
    with torch.no_grad():
        z = net(x)
    want = GOLDEN[f"{name}-{dims}d-{variant}"]
    old_state = _with_headless_blocks(cfg, net) if net.decoder_from == "concat" else {}
    if len(old_state) > len(net.state_dict()):  # levels without a head (a head at every level: nothing changed)
        keys = ";".join(f"{k}:{tuple(v.shape)}" for k, v in old_state.items())
        assert hashlib.sha256(keys.encode()).hexdigest()[:16] == want["keys"]
        net.load_state_dict(old_state, strict=True)  # the headless blocks are dropped, nothing else changes
        with torch.no_grad():
            torch.testing.assert_close(net(x), z, rtol=0, atol=0)
        return  # the seeded weights differ from the golden ones: fewer modules drew from the generator
    assert hashlib.sha256(keys.encode()).hexdigest()[:16] == want["keys"]
    assert train == pytest.approx(want["train"], rel=1e-4, abs=1e-2)
    assert float(z.double().sum()) == pytest.approx(want["eval"], rel=1e-4, abs=1e-2)
    assert float(z.double().abs().sum()) == pytest.approx(want["eval_abs"], rel=1e-4, abs=1e-2)


def test_a_checkpoint_written_before_the_split_loads_and_predicts_the_same():
    old = torch.load(HERE / "unet2d_before_decoder_split.pt", weights_only=True)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=[4, 8, 16])
    net.load_state_dict(old["state_dict"], strict=True)
    with torch.no_grad():
        out = net.eval()(old["input"])
    torch.testing.assert_close(out, old["eval_out"], rtol=1e-5, atol=1e-5)


def _with_headless_blocks(cfg, net):
    """``net``'s state_dict in the layout of before the change: its own entries plus the decoder blocks of the levels
    without a head, taken from the same net built with a head (hence a block) at every level, in its key order."""
    full_cfg = cfg.copy()
    full_cfg.model.net.deep_supervision = net.depth - 1
    full = build(full_cfg.model.net).state_dict()
    own = net.state_dict()
    built = len(net.decoders)
    extra = {k for k in full if k.startswith("decoders.") and int(k.split(".")[1]) >= built}
    return {k: (own[k] if k in own else full[k]) for k in full if k in own or k in extra}
