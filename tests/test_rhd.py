"""RHD reader and sample pipeline on the real evaluation frames in ../shared/realdata."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets import SAMPLE_KEYS, DatasetLayoutError, build_dataset
from datasets.base import choose_hand, hand_mask
from datasets.rhd import RHD_PIXEL_OFFSET, RHDReader
from utils.crop import apply_affine, crop_to_original, flip_matrix, warp_image
from utils.geometry import project_points
from utils.image_io import read_label_image
from utils.joints import FINGER_JOINTS

pytestmark = pytest.mark.realdata

REAL_FRAMES = range(136)  # the sample has images 0-135 of the 2728 annotated frames
TIPS = [FINGER_JOINTS[f][3] for f in FINGER_JOINTS]


def rhd_root(realdata: Path) -> Path:
    return realdata / "RHD" / "RHD_published_v2"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("annotation_cache")


@pytest.fixture(scope="module")
def eval_ds(realdata: Path, cache_dir: Path):
    return build_dataset("rhd", realdata, "test", train_aug=False, frame_ids=REAL_FRAMES,
                         cache_dir=cache_dir)


@pytest.fixture(scope="module")
def aug_ds(realdata: Path, cache_dir: Path):
    return build_dataset("rhd", realdata, "test", train_aug=True, seed=3,
                         frame_ids=REAL_FRAMES, cache_dir=cache_dir)


def fraction_on_mask(kp_px: np.ndarray, mask: np.ndarray) -> float:
    """Share of points whose nearest pixel is a mask pixel (outside the image: off)."""
    ij = np.round(kp_px).astype(int)
    h, w = mask.shape
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    on = np.zeros(len(ij), dtype=bool)
    on[inside] = mask[ij[inside, 1], ij[inside, 0]] > 0
    return float(on.mean())


def mask_value(kp_px: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Bilinear value of a 0/1 mask at sub-pixel points (no rounding ties)."""
    pts = kp_px.astype(np.float32)
    return cv2.remap(mask.astype(np.float32), pts[None, :, 0], pts[None, :, 1],
                     cv2.INTER_LINEAR)[0]


def test_sample_keys_shapes_and_types(eval_ds) -> None:
    s = eval_ds[0]
    assert tuple(s) == SAMPLE_KEYS
    shapes = {"image": (3, 256, 256), "heatmaps": (21, 64, 64), "heatmap_weights": (21,),
              "mask": (1, 64, 64), "kp2d_px": (21, 2), "visible": (21,),
              "kp2d_orig_px": (21, 2), "orig_size_wh": (2,), "affine": (2, 3), "K": (3, 3),
              "joints_m": (21, 3)}
    for key, shape in shapes.items():
        assert tuple(s[key].shape) == shape, key
    assert s["image"].dtype == torch.float32
    assert float(s["image"].min()) >= 0.0 and float(s["image"].max()) <= 1.0
    assert s["visible"].dtype == torch.bool and s["orig_size_wh"].tolist() == [320, 320]
    assert s["dataset"] == "rhd" and s["frame_id"] == 0 and s["has_mask"] is True
    batch = torch.utils.data.default_collate([eval_ds[0], eval_ds[1]])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["flipped"].dtype == torch.bool


def test_image_is_the_rgb_crop_of_the_file(eval_ds) -> None:
    s = eval_ds[7]
    bgr = cv2.imread(str(eval_ds.record(7).image_path))
    crop = warp_image(bgr[..., ::-1].copy(), s["affine"].numpy().astype(np.float64), 256)
    np.testing.assert_allclose(s["image"].numpy().transpose(1, 2, 0), crop / 255.0,
                               atol=1.01 / 255)


def test_pixel_offset_applied_once(realdata: Path, cache_dir: Path) -> None:
    raw = RHDReader(rhd_root(realdata), "evaluation", frame_ids=[0], pixel_offset=0.0,
                    cache_dir=cache_dir).record(0)
    conv = RHDReader(rhd_root(realdata), "evaluation", frame_ids=[0],
                     cache_dir=cache_dir).record(0)
    np.testing.assert_allclose(conv.hands[0].kp2d_px - raw.hands[0].kp2d_px, RHD_PIXEL_OFFSET)
    np.testing.assert_allclose(conv.K[:2, 2] - raw.K[:2, 2], RHD_PIXEL_OFFSET)


def test_chosen_hand_has_more_mask_pixels_and_left_is_flipped(eval_ds) -> None:
    flips = []
    for i in range(0, 136, 9):
        record = eval_ds.record(i)
        mask = read_label_image(record.mask_path)
        left = int(((mask >= 2) & (mask <= 17)).sum())
        right = int(((mask >= 18) & (mask <= 33)).sum())
        hand = choose_hand(record, mask)
        assert hand.side == ("left" if left > right else "right")
        flips.append(eval_ds[i]["flipped"])
        assert flips[-1] == (hand.side == "left")
    assert any(flips) and not all(flips)


def test_keypoints_land_on_the_chosen_hands_mask_after_the_crop(eval_ds, aug_ds) -> None:
    for ds in (eval_ds, aug_ds):
        on_full, on_target = [], []
        for i in range(0, 136, 5):
            s = ds[i]
            record = ds.record(i)
            mask = read_label_image(record.mask_path)
            binary = hand_mask(record, choose_hand(record, mask), mask)
            crop_mask = cv2.warpAffine(binary, s["affine"].numpy().astype(np.float64),
                                       (256, 256), flags=cv2.INTER_NEAREST)
            vis = s["visible"].numpy()
            on_full.append(fraction_on_mask(s["kp2d_px"].numpy()[vis], crop_mask))
            kp_hm = ds.codec.crop_to_heatmap(s["kp2d_px"].numpy()[vis])
            on_target.append(fraction_on_mask(kp_hm, s["mask"][0].numpy()))
        assert np.mean(on_full) > 0.9
        assert np.mean(on_target) > 0.85


def test_flipped_labels_sit_on_flipped_mask_as_well_as_originals(eval_ds) -> None:
    checked = 0
    for i in range(136):
        record = eval_ds.record(i)
        mask = read_label_image(record.mask_path)
        hand = choose_hand(record, mask)
        if hand.side != "left":
            continue
        binary = hand_mask(record, hand, mask)
        kp = hand.kp2d_px[hand.visible]
        flip = flip_matrix(320)
        flipped_mask = warp_image(binary, flip, 320)
        np.testing.assert_array_equal(flipped_mask, binary[:, ::-1])
        before = mask_value(kp, binary)
        after = mask_value(apply_affine(flip, kp), flipped_mask)
        np.testing.assert_allclose(after, before, atol=1e-2)
        checked += 1
    assert checked > 10


def test_flip_twice_is_identity(eval_ds) -> None:
    record = eval_ds.record(3)
    image = cv2.imread(str(record.image_path))
    flip = flip_matrix(image.shape[1])
    twice = warp_image(warp_image(image, flip, 320), flip, 320)
    np.testing.assert_array_equal(twice, image)
    kp = record.hands[0].kp2d_px
    np.testing.assert_allclose(apply_affine(flip @ flip, kp), kp, atol=1e-12)


def test_dot_drawn_at_keypoint_peaks_at_warped_keypoint(aug_ds) -> None:
    """A sub-pixel blob at a label, warped like the image, peaks at the sample's keypoint."""
    grid_v, grid_u = np.mgrid[0:320, 0:320].astype(np.float64)
    crop_v, crop_u = np.mgrid[0:256, 0:256].astype(np.float64)
    checked = 0
    for i in (2, 40, 77):
        s = aug_ds[i]
        affine = s["affine"].numpy().astype(np.float64)
        scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
        sigma = max(1.5, 2.0 / scale)
        for j in (0, 8, 16):
            target = s["kp2d_px"][j].double().numpy()
            margin = 5 * sigma * scale
            if not ((margin < target) & (target < 255 - margin)).all():
                continue  # too close to the crop border for a clean centroid
            u, v = s["kp2d_orig_px"][j].double().numpy()
            blob = np.exp(-((grid_u - u) ** 2 + (grid_v - v) ** 2) / (2 * sigma**2))
            warped = warp_image(blob, affine, 256)
            centre = np.array([(crop_u * warped).sum(), (crop_v * warped).sum()]) / warped.sum()
            peak = np.unravel_index(warped.argmax(), warped.shape)
            assert np.abs(np.array(peak[::-1]) - target).max() <= 1.0
            np.testing.assert_allclose(centre, target, atol=0.05)
            checked += 1
    assert checked >= 4


def test_crop_camera_projects_joints_onto_the_affine_labels(aug_ds) -> None:
    """project(K', joints') == affine(project(K, joints)) to 0.01 px on augmented crops.

    RHD's own 2D labels differ from its 3D projection by label noise (median 0.04 px in the
    original image), so the exact check is against the projection.
    """
    for i in range(0, 136, 17):
        s = aug_ds[i]
        record = aug_ds.record(i)
        hand = next(h for h in record.hands if (h.side == "left") == s["flipped"])
        front = hand.joints_m[:, 2] > 0
        expected = apply_affine(s["affine"].numpy().astype(np.float64),
                                project_points(record.K, hand.joints_m))
        got = project_points(s["K"].numpy().astype(np.float64),
                             s["joints_m"].numpy().astype(np.float64))
        np.testing.assert_allclose(got[front], expected[front], atol=0.01)


def test_oracle_encode_decode_back_to_original_pixels(eval_ds) -> None:
    errors = []
    for i in range(136):
        s = eval_ds[i]
        kp, _ = eval_ds.codec.decode(s["heatmaps"].numpy())
        back = crop_to_original(kp, s["affine"].numpy())
        keep = s["heatmap_weights"].numpy() > 0
        errors.append(np.linalg.norm(back - s["kp2d_orig_px"].numpy(), axis=1)[keep])
    assert np.concatenate(errors).mean() < 0.25


def test_augmentation_is_seeded_by_epoch_and_index(aug_ds) -> None:
    a = aug_ds[5]
    b = aug_ds[5]
    torch.testing.assert_close(a["image"], b["image"])
    aug_ds.set_epoch(1)
    try:
        c = aug_ds[5]
    finally:
        aug_ds.set_epoch(0)
    assert not torch.equal(a["affine"], c["affine"])


def test_both_hands_option(realdata: Path, cache_dir: Path) -> None:
    reader = RHDReader(rhd_root(realdata), "evaluation", frame_ids=REAL_FRAMES, hands="both",
                       min_visible=10, cache_dir=cache_dir)
    sides = [reader.record(i).hands[0].side for i in range(len(reader))]
    assert {"left", "right"} <= set(sides)
    for i in range(len(reader)):
        assert len(reader.record(i).hands) == 1
        assert reader.record(i).hands[0].visible.sum() >= 10


def test_missing_image_for_requested_frame_names_it(realdata: Path, cache_dir: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"00136\.png") as info:
        build_dataset("rhd", realdata, "test", train_aug=False, cache_dir=cache_dir)
    assert "Expected layout" in str(info.value)


def test_train_split_missing_is_a_layout_error(realdata: Path, cache_dir: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="training"):
        build_dataset("rhd", realdata, "train", train_aug=True, cache_dir=cache_dir)


def test_augmentation_is_identical_with_any_number_of_workers(realdata: Path,
                                                              cache_dir: Path) -> None:
    ds = build_dataset("rhd", realdata, "test", train_aug=True, seed=5, frame_ids=range(6),
                       cache_dir=cache_dir)
    ds.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers)
        batches.append(list(loader))
    for a, b in zip(*batches, strict=True):
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["affine"], b["affine"])
