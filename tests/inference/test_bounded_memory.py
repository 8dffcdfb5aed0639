"""Bounded-memory prediction gives the results of the plain MONAI path: slabbed sliding windows equal whole-volume
ones, the chunked inversion equals ``Invertd`` + argmax, and neither holds K full-resolution channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from predict_helpers import make_affine, render_phantom, save_with_codes

import medseg.inference.resample as resample
from medseg.inference.predictor import Predictor
from medseg.inference.resample import _axis_permutation, inverse_map, invert_labels
from medseg.inference.sliding import plan_slabs, predict_slabs, window_starts


@pytest.mark.parametrize("size", [16, 17, 40, 97])
@pytest.mark.parametrize("roi,overlap", [(16, 0.5), (16, 0.25), (8, 0.0), (1, 0.5)])
@pytest.mark.parametrize("max_len", [1, 24, 50])
def test_slab_plan_tiles_the_axis_with_the_global_windows(size: int, roi: int, overlap: float, max_len: int) -> None:
    slabs = plan_slabs(size, roi, overlap, max_len)
    assert slabs[0].lo == 0 and slabs[-1].hi == size
    assert all(a.hi == b.lo for a, b in zip(slabs, slabs[1:], strict=False))
    starts = window_starts(size, roi, overlap)
    for s in slabs:
        assert s.sub_lo <= s.lo < s.hi <= s.sub_hi <= max(size, roi)
        inside = [p - s.sub_lo for p in starts if s.sub_lo <= p and p + roi <= s.sub_hi]
        assert window_starts(s.sub_hi - s.sub_lo, roi, overlap) == inside
        covering = [p for p in starts if p < s.hi and p + roi > s.lo]  # every window touching the final region
        assert all(s.sub_lo <= p and p + roi <= s.sub_hi for p in covering)
        if len(slabs) > 1 and s.sub_hi - s.sub_lo > max_len:
            assert len(covering) <= int(np.ceil(roi / max(int(roi * (1 - overlap)), 1))) + 1  # one window step


@pytest.mark.parametrize("roi", [(16, 16, 16), (12, 16, 1)])
def test_slabbed_sliding_window_equals_the_whole_volume(roi: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 1)).eval()
    image = torch.randn(1, 1, 45, 23, 30)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(x, roi, 3, net, 0.5, mode="gaussian")  # type: ignore[return-value]

    with torch.no_grad():
        whole = predict(image)
        slabs = plan_slabs(45, roi[0], 0.5, max_len=20)
        assert len(slabs) > 2
        out = torch.full_like(whole, float("nan"))

        def consume(region: slice, p: torch.Tensor) -> None:
            out[:, :, region] = p

        predict_slabs(predict, image, 0, slabs, consume)
    torch.testing.assert_close(out, whole, atol=1e-6, rtol=1e-5)


CASES = {
    "oblique_lps": ((1.7, 1.7, 2.1), "LPS", 17.0, (1, 1, 0.3)),
    "pir_aniso": ((1.4, 2.6, 1.8), "PIR", 0.0, (0, 0, 1)),
    "network_spacing_lps": ((2.0, 2.0, 2.0), "LPS", 0.0, (0, 0, 1)),  # no resampling: exact index path
}


def _write(tmp_path: Path, name: str) -> str:
    spacing, axes, deg, axis = CASES[name]
    affine, shape = make_affine(spacing, axes, deg, axis)
    path = tmp_path / f"{name}.nii.gz"
    save_with_codes(path, render_phantom(affine, shape)[0], affine)
    return str(path)


def test_bounded_inversion_equals_monai_invertd(run_dir: Path, tmp_path: Path) -> None:
    ours, reference = Predictor([run_dir]), Predictor([run_dir], invert="monai")
    for name in CASES:
        path = _write(tmp_path, name)
        labels, probs = ours.predict([path], probabilities=True)
        ref_labels, ref_probs = reference.predict([path], probabilities=True)
        assert labels.dtype == ref_labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, ref_labels, err_msg=name)
        assert probs is not None and ref_probs is not None and probs.shape == (3, *labels.shape)
        np.testing.assert_allclose(probs.astype(np.float32), ref_probs.astype(np.float32), atol=2e-3, err_msg=name)


def test_axis_aligned_input_at_the_network_spacing_is_inverted_by_index(
    trained_runs: dict[str, Path], tmp_path
) -> None:
    predictor = Predictor([trained_runs["3d"]])
    data = predictor.pre({"image": [_write(tmp_path, "network_spacing_lps")]})
    assert _axis_permutation(inverse_map(data["image"])) is not None  # type: ignore[arg-type]
    oblique = predictor.pre({"image": [_write(tmp_path, "oblique_lps")]})
    assert _axis_permutation(inverse_map(oblique["image"])) is None  # type: ignore[arg-type]


def test_small_memory_budget_uses_slabs_and_float16(trained_runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path, "oblique_lps")
    default = Predictor([trained_runs["3d"]])
    tight = Predictor([trained_runs["3d"]], memory_budget=100_000)  # << 3 classes × ~25k voxels × 4 bytes
    planned: list[int] = []
    import medseg.inference.predictor as predictor_module

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        slabs = plan_slabs(*args, **kwargs)
        planned.append(len(slabs))
        return slabs

    monkeypatch.setattr(predictor_module, "plan_slabs", spy)
    image = tight.pre({"image": [path]})["image"]
    probs = tight.probabilities(image.as_tensor()[None])
    assert probs.dtype == torch.float16 and planned[-1] > 1
    labels, _ = tight.predict([path])
    ref, _ = default.predict([path])
    assert np.mean(labels == ref) > 0.999  # float16 rounding may flip a near-tie voxel, nothing more


def _peak_rss_growth(fn) -> int:  # noqa: ANN001
    """Bytes the process's peak RSS grows by while ``fn`` runs (Linux: VmHWM reset through clear_refs)."""

    def hwm() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise OSError("no VmHWM")

    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = hwm()
    except OSError:
        pytest.skip("peak RSS cannot be reset on this system")
    fn()
    return hwm() - before


def test_inversion_memory_does_not_grow_with_classes_times_voxels(monkeypatch) -> None:
    """32 classes on a 96³ input grid: all channels at full resolution would be 113 MB in float32 (226 MB in
    MONAI's float64 resampling, plus its 3-channel float64 sampling grid); the chunked inversion stays within a few
    8 MB chunks."""
    monkeypatch.setattr(resample, "CHUNK_BYTES", 8 * 2**20)
    k, net_shape, out_shape = 32, (36, 36, 36), (96, 96, 96)
    probs = torch.softmax(torch.randn(k, *net_shape), 0)
    affine = np.diag([96 / 36 * 1.01, 96 / 36, 96 / 36, 1.0])  # network voxels ~2.7× the input's, slightly oblique
    affine[0, 1] = 0.05
    mapping = resample.InverseMap(np.linalg.inv(affine), np.zeros(3), np.asarray(net_shape) - 1.0, True, out_shape)
    labels = np.empty(0)

    def run() -> None:
        nonlocal labels
        labels, _ = invert_labels(probs, mapping)

    growth = _peak_rss_growth(run)
    assert labels.shape == out_shape and labels.dtype == np.uint8 and len(np.unique(labels)) > 10
    print(f"peak RSS growth {growth / 2**20:.1f} MB")
    assert growth < 48 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MB"


def test_separable_resampling_equals_the_sampling_grid(monkeypatch) -> None:
    """Grids that are not oblique to each other (flips, permutations, any spacing) are resampled axis by axis; that
    equals trilinear ``grid_sample`` (zeros outside the crop, border clamp) to rounding."""
    torch.manual_seed(0)
    probs = torch.softmax(3 * torch.randn(4, 9, 11, 7), 0)
    matrix = np.zeros((4, 4))
    matrix[1, 0], matrix[0, 1], matrix[2, 2], matrix[3, 3] = -0.55, 0.43, 1.3, 1.0  # axes permuted, one flipped
    matrix[:3, 3] = [-1.2, 10.4, -0.7]
    lo, hi = np.array([-2.0, -1.0, -1.0]), np.array([9.0, 11.0, 7.0])  # the crop box inside a larger grid
    m = resample.InverseMap(matrix, lo, hi, True, (24, 21, 7))
    assert resample._axis_scaling(m) is not None and resample._axis_permutation(m) is None
    labels, probs_sep = invert_labels(probs, m, with_probs=True)
    monkeypatch.setattr(resample, "_axis_scaling", lambda m: None)
    ref_labels, probs_grid = invert_labels(probs, m, with_probs=True)
    assert probs_sep is not None and probs_grid is not None
    np.testing.assert_allclose(probs_sep.astype(np.float32), probs_grid.astype(np.float32), atol=1e-3)
    assert np.mean(labels == ref_labels) > 0.999 and (probs_grid.sum(0) == 0).any()  # some voxels outside the crop
