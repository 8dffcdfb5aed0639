"""nnU-Net's planning rules on known inputs (values worked out by hand from nnU-Net v2's ExperimentPlanner)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.planning import topology as topo


def test_isotropic_data_gets_the_median_spacing():
    spacings = np.array([[1.0, 1.0, 1.2], [1.2, 1.0, 1.0], [1.4, 1.1, 1.1]])
    shapes = np.full((3, 3), 100.0)
    spacing, why = topo.target_spacing(spacings, shapes)
    assert spacing == [1.2, 1.0, 1.1]
    assert why == "median spacing of the cases"


def test_a_coarse_axis_takes_its_10th_percentile():
    # 10 cases at 0.7 x 0.7 x z mm, z = 4.0 mm except two thin-slice cases at 2.5 mm; 120 x 120 x 16 voxels
    z = np.array([4.0] * 8 + [2.5, 2.5])
    spacings = np.stack([np.full(10, 0.7), np.full(10, 0.7), z], 1)
    shapes = np.stack([np.full(10, 120.0), np.full(10, 120.0), np.full(10, 16.0)], 1)
    spacing, why = topo.target_spacing(spacings, shapes)
    assert spacing[:2] == [0.7, 0.7]
    assert spacing[2] == pytest.approx(2.5)  # np.percentile(z, 10) = 2.5
    assert "10th percentile 2.5 mm" in why and "z axis" in why


def test_the_rule_needs_few_voxels_along_the_coarse_axis_too():
    # 4 mm slices but as many voxels along z as in-plane: not "anisotropic" for nnU-Net
    spacings = np.tile([0.7, 0.7, 4.0], (5, 1))
    spacing, _ = topo.target_spacing(spacings, np.full((5, 3), 100.0))
    assert spacing == [0.7, 0.7, 4.0]


def test_anisotropic_levels_pool_in_plane_first_with_in_plane_kernels():
    # 0.7 x 0.7 x 4 mm, patch 160 x 160 x 24: z is 5.7x coarser. Levels (spacing before pooling, sizes):
    # 0: 0.7/0.7/4 (160,160,24) pool xy, kernel 3,3,1   1: 1.4/1.4/4 (80,80,24) pool xy, kernel 3,3,1
    # 2: 2.8/2.8/4 (40,40,24) z within 2x: pool xyz, kernel 3,3,3   3: 5.6/5.6/8 (20,20,12) pool xyz
    # 4: (10,10,6): z < 8 stops; x, y >= 8 pool   5: (5,5,6): nothing left -> bottleneck
    levels = topo.pool_and_kernels([0.7, 0.7, 4.0], [160, 160, 24])
    assert levels.strides == [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert levels.kernels == [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert levels.divisor == [32, 32, 4]


def test_isotropic_levels_pool_every_axis_until_the_feature_map_is_small():
    levels = topo.pool_and_kernels([1.0, 1.0, 1.0], [64, 64, 32])
    # (64,64,32) → (32,32,16) → (16,16,8) → (8,8,4): z at 4 < 2 × 4 stops → x, y once more → (4,4,4)
    assert levels.strides == [[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]]
    assert levels.kernels == [[3, 3, 3]] * 5


def test_a_fixed_depth_is_honoured():
    assert topo.pool_and_kernels([1.0, 1.0, 1.0], [16, 16, 16], depth=2).strides == [[2, 2, 2], [2, 2, 2]]
    deep = topo.pool_and_kernels([1.0, 1.0, 1.0], [16, 16, 16], depth=4)
    assert deep.depth == 4 and deep.divisor == [16, 16, 16]


def test_initial_patch_has_an_isotropic_physical_aspect_clipped_to_the_median_shape():
    patch = topo.initial_patch([1.0, 1.0, 4.0], [500, 500, 500], 256**3)
    assert patch[0] == patch[1] and patch[0] == pytest.approx(4 * patch[2], abs=2)
    assert np.prod(patch) == pytest.approx(256**3, rel=0.01)
    assert topo.initial_patch([1.0, 1.0, 4.0], [120, 120, 16], 256**3) == [120, 120, 16]
    assert topo.round_patch([119, 100, 15], [32, 32, 4]) == [128, 128, 16]
    assert topo.shrink_axis([128, 128, 16], [120, 60, 16]) == 1


def test_a_patch_you_set_gets_levels_that_divide_it():
    # 100 → 50 → 25: 25 is odd, so x and y stop there; z 20 → 10 → 5
    levels = topo.pool_and_kernels([1.0, 1.0, 1.0], [100, 100, 20], exact=True)
    assert levels.strides == [[2, 2, 2], [2, 2, 2]]
    assert all(p % d == 0 for p, d in zip([100, 100, 20], levels.divisor, strict=True))
