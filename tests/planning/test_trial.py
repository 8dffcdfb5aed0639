"""The memory probe: the meta-device count equals the count on real CPU tensors, grows with the batch, is cached."""

from __future__ import annotations

import pytest
import torch

from medseg.planning import trial as trial_mod
from medseg.planning.trial import _count_step, measure

NET = {
    "_target_": "medseg.nets.UNet",
    "spatial_dims": 3,
    "channels": [4, 8, 16],
    "strides": [[2, 2, 1], 2],
    "kernel_sizes": [[3, 3, 1], 3, 3],
    "in_channels": 2,
    "out_channels": 3,
}


def test_meta_and_real_cpu_tensors_give_the_same_count():
    shape = (2, 2, 16, 16, 8)
    meta = _count_step(NET, shape, 3, "meta")
    real = _count_step(NET, shape, 3, "cpu")
    assert meta.bytes == real.bytes and meta.activations == real.activations
    assert (meta.how, real.how) == ("meta", "cpu")
    # at least the float32 input and the first block's two conv outputs (4 channels each) are saved
    assert meta.activations > 4 * (2 * 16 * 16 * 8) * (2 + 4 + 4)


def test_activations_grow_with_batch_and_patch():
    one = measure(NET, 2, 3, [16, 16, 8], 1)
    two = measure(NET, 2, 3, [16, 16, 8], 2)
    big = measure(NET, 2, 3, [32, 32, 8], 1)
    assert two.activations == pytest.approx(2 * one.activations, rel=0.02)
    assert big.activations == pytest.approx(4 * one.activations, rel=0.05)
    assert two.bytes - two.activations == one.bytes - one.activations  # parameters, gradients, optimizer state


def test_trials_are_cached(tmp_path, monkeypatch):
    first = measure(NET, 2, 3, [16, 16, 8], 2, cache_dir=tmp_path)
    assert len(list((tmp_path / "trials").glob("*.json"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(trial_mod, "_count_step", refuse)
    assert measure(NET, 2, 3, [16, 16, 8], 2, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="measured again"):
        measure(NET, 2, 3, [16, 16, 16], 2, cache_dir=tmp_path)  # another patch: another trial


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trials_measure_allocations():
    one = measure(NET, 2, 3, [32, 32, 8], 1, device="cuda", precision="32")
    two = measure(NET, 2, 3, [32, 32, 8], 2, device="cuda", precision="32")
    assert one.how == "cuda" and one.seconds is not None
    assert one.activations < two.activations < 3 * one.activations
