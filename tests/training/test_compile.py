"""``model.compile=true``: the compiled training forward computes what the eager one does and changes no state."""

from __future__ import annotations

import pytest
import torch

from medseg.config import build, compose_config

TINY = ["model/net=unet", "model.net.spatial_dims=2", "model.net.channels=[4,8]", "data.num_classes=3"]


def _module(compile_: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = compose_config("train", [*TINY, "data.in_channels=1", f"model.compile={str(compile_).lower()}"])
    return build(cfg.model)


@pytest.mark.slow
def test_compiled_training_step_matches_eager_and_keeps_the_state_dict() -> None:
    eager, compiled = _module(False), _module(True)
    assert compiled._compiled is not None and eager._compiled is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # nothing registered under the compiled callable
    gen = torch.Generator().manual_seed(1)
    batch = {
        "image": torch.randn(2, 1, 16, 16, generator=gen),
        "label": torch.randint(0, 3, (2, 1, 16, 16), generator=gen),
    }
    losses = []
    for module in (eager, compiled):
        module.train()
        module.log = lambda *a, **k: None  # no trainer attached
        loss = module.training_step(batch, 0)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, p_e), (_, p_c) in zip(eager.named_parameters(), compiled.named_parameters(), strict=True):
        torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-4, atol=1e-6, msg=name)
