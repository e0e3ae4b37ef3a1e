"""Crop geometry, flips and photometric augmentation (pure functions, synthetic inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.transforms import (
    AugmentConfig,
    CropConfig,
    GeometricParams,
    compute_crop,
    photometric,
    sample_geometric,
)
from utils.crop import (
    apply_affine,
    crop_matrix,
    crop_to_original,
    flip_intrinsics,
    flip_joints,
    flip_matrix,
    image_rotation_matrix,
    rotation_z,
    warp_image,
    warp_mask,
)
from utils.geometry import intrinsics, project_points

# Anisotropic focal lengths (like STB's SK camera) make the rotation test meaningful.
K = intrinsics(600.0, 560.0, 310.3, 241.7)


def random_hand(rng: np.random.Generator) -> np.ndarray:
    centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.4, 0.8)])
    return centre + rng.normal(0, 0.04, size=(21, 3))


def test_flip_matrix_matches_cv2_flip_and_twice_is_identity() -> None:
    image = np.random.default_rng(0).integers(0, 255, size=(7, 9, 3), dtype=np.uint8)
    flipped = warp_image(image, flip_matrix(9), 9)[:7]
    np.testing.assert_array_equal(flipped, image[:, ::-1][:7])
    np.testing.assert_allclose(flip_matrix(9) @ flip_matrix(9), np.eye(3))
    np.testing.assert_allclose(apply_affine(flip_matrix(9), np.array([[0.0, 2.0], [8.0, 1.0]])),
                               [[8.0, 2.0], [0.0, 1.0]])


def test_flipped_camera_sees_flipped_joints_at_flipped_pixels() -> None:
    joints = random_hand(np.random.default_rng(1))
    kp = project_points(K, joints)
    np.testing.assert_allclose(project_points(flip_intrinsics(K, 640), flip_joints(joints)),
                               apply_affine(flip_matrix(640), kp), atol=1e-9)


def test_image_rotation_equals_rotating_joints_about_the_optical_axis() -> None:
    joints = random_hand(np.random.default_rng(2))
    for angle in (0.3, -1.2, 2.9):
        rotated = joints @ rotation_z(angle).T
        np.testing.assert_allclose(project_points(K, rotated),
                                   apply_affine(image_rotation_matrix(K, angle),
                                                project_points(K, joints)), atol=1e-9)


def test_crop_matrix_maps_square_onto_crop_pixel_area() -> None:
    m = crop_matrix(np.array([100.0, 50.0]), 64.0, 256)
    np.testing.assert_allclose(apply_affine(m, np.array([[68.0, 18.0], [132.0, 82.0],
                                                         [100.0, 50.0]])),
                               [[-0.5, -0.5], [255.5, 255.5], [127.5, 127.5]])
    with pytest.raises(ValueError, match="positive"):
        crop_matrix(np.zeros(2), 0.0, 256)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_intrinsics_project_joints_onto_crop_keypoints(flip: bool) -> None:
    rng = np.random.default_rng(3)
    aug = AugmentConfig(rotation_deg=180.0)
    for _ in range(20):
        joints = random_hand(rng)
        kp = project_points(K, joints)
        params = sample_geometric(rng, aug)
        geo = compute_crop(kp, joints, K, (640, 480), flip=flip, crop=CropConfig(),
                           params=params)
        assert geo.flipped == flip
        np.testing.assert_allclose(project_points(geo.K, geo.joints_m), geo.kp2d_px, atol=0.01)
        np.testing.assert_allclose(geo.kp2d_px, apply_affine(geo.affine, kp), atol=1e-9)
        # Rotation about z keeps depths; the mirror keeps them too.
        np.testing.assert_allclose(geo.joints_m[:, 2], joints[:, 2], atol=1e-12)


def test_crop_frames_the_keypoint_box_with_the_factor() -> None:
    joints = random_hand(np.random.default_rng(4))
    kp = project_points(K, joints)
    geo = compute_crop(kp, joints, K, (640, 480), flip=False, crop=CropConfig(256, 2.0))
    lo, hi = geo.kp2d_px.min(axis=0), geo.kp2d_px.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [127.5, 127.5], atol=1e-9)
    assert max(hi - lo) == pytest.approx(128.0)


def test_crop_to_original_inverts_the_affine_batched() -> None:
    rng = np.random.default_rng(5)
    affines, points = [], []
    for _ in range(4):
        joints = random_hand(rng)
        kp = project_points(K, joints)
        geo = compute_crop(kp, joints, K, (640, 480), flip=bool(rng.integers(2)),
                           crop=CropConfig(), params=sample_geometric(rng, AugmentConfig()))
        affines.append(geo.affine[:2].astype(np.float32))
        points.append(kp)
        np.testing.assert_allclose(crop_to_original(geo.kp2d_px, geo.affine), kp, atol=1e-9)
    back = crop_to_original(np.stack([apply_affine(a, p) for a, p in zip(affines, points,
                                                                           strict=True)]),
                            np.stack(affines))
    np.testing.assert_allclose(back, np.stack(points), atol=1e-3)


def test_joints_behind_the_camera_do_not_frame_the_crop() -> None:
    joints = random_hand(np.random.default_rng(6))
    joints[0] = [0.5, 0.0, -0.1]  # RHD has such rows; their projection is meaningless
    kp = project_points(K, joints)
    geo = compute_crop(kp, joints, K, (640, 480), flip=False, crop=CropConfig())
    front = geo.kp2d_px[1:]
    assert max(front.max(axis=0) - front.min(axis=0)) == pytest.approx(128.0)


def test_warp_mask_is_centre_aligned_with_the_heatmap_grid() -> None:
    mask = np.zeros((320, 320), dtype=np.uint8)
    mask[100:140, 60:100] = 1
    geo_affine = crop_matrix(np.array([79.5, 119.5]), 160.0, 256)  # 1.6x zoom
    small = warp_mask(mask, geo_affine, 256, 64)
    assert small.shape == (64, 64) and set(np.unique(small)) <= {0, 1}
    ys, xs = np.nonzero(small)
    assert (xs.mean(), ys.mean()) == pytest.approx((31.5, 31.5), abs=0.6)
    assert small.sum() == pytest.approx((40 * 64 / 160) ** 2, rel=0.15)


def test_photometric_is_seeded_and_keeps_range() -> None:
    image = np.random.default_rng(7).uniform(0, 1, size=(32, 32, 3)).astype(np.float32)
    aug = AugmentConfig(blur_prob=1.0)
    a = photometric(image.copy(), np.random.default_rng([1, 2]), aug)
    b = photometric(image.copy(), np.random.default_rng([1, 2]), aug)
    c = photometric(image.copy(), np.random.default_rng([1, 3]), aug)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == image.shape
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_identity_params_and_no_augmentation_ranges() -> None:
    params = sample_geometric(np.random.default_rng(0), AugmentConfig(
        center_jitter=0.0, scale_jitter=0.0, rotation_deg=0.0))
    assert params == GeometricParams()


def test_context_crops_make_the_hand_small_and_keep_it_inside() -> None:
    joints = random_hand(np.random.default_rng(4))
    kp = project_points(K, joints)
    aug = AugmentConfig(center_jitter=0.0, scale_jitter=0.0, rotation_deg=0.0,
                        context_prob=1.0, context_scale_max=4.0)  # fmt: skip
    sizes = []
    for seed in range(40):
        params = sample_geometric(np.random.default_rng(seed), aug)
        assert 1.0 <= params.scale <= 4.0
        geo = compute_crop(kp, joints, K, (640, 480), flip=False, crop=CropConfig(256, 2.0),
                           params=params)  # fmt: skip
        lo, hi = geo.kp2d_px.min(axis=0), geo.kp2d_px.max(axis=0)
        # The keypoint box is 128 px / context and lies inside the 256 crop, off centre.
        assert max(hi - lo) == pytest.approx(128.0 / params.scale)
        assert lo.min() >= -0.5 and hi.max() <= 255.5
        sizes.append(max(hi - lo))
    assert min(sizes) < 50 and max(sizes) > 100


def test_context_off_draws_exactly_what_it_drew_before() -> None:
    # context_prob 0 must not consume random numbers (resumed runs stay bit-identical).
    plain, with_field = np.random.default_rng(3), np.random.default_rng(3)
    a = sample_geometric(plain, AugmentConfig())
    b = sample_geometric(with_field, AugmentConfig(context_prob=0.0, context_scale_max=8.0))
    assert a == b and plain.uniform() == with_field.uniform()
