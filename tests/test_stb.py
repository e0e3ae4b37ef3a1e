"""STB reader on the real B1Counting BB labels and frame-0 stereo pair."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets import DatasetLayoutError, build_dataset
from datasets.stb import STBReader, decode_frame_id, encode_frame_id
from datasets.stb_calibration import BB_BASELINE_MM, BB_K
from utils.geometry import project_points

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def reader(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> STBReader:
    return STBReader(realdata / "STB", ["B1Counting"], camera="BB", frame_ids=[0],
                     cache_dir=tmp_path_factory.mktemp("cache"))


def skin_fraction(image_rgb: np.ndarray, kp: np.ndarray) -> float:
    """Share of points on skin-coloured pixels (reddish hue, some saturation, not dark)."""
    hsv = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2HSV)
    ij = np.round(kp).astype(int)
    h, s, v = hsv[ij[:, 1], ij[:, 0]].T.astype(int)
    return float(((h <= 20) & (s >= 60) & (v >= 90)).mean())


def test_bb_frame0_keypoints_fall_on_the_hand_in_both_cameras(reader: STBReader) -> None:
    assert len(reader) == 2
    for i in range(2):
        record = reader.record(i)
        image = cv2.cvtColor(cv2.imread(str(record.image_path)), cv2.COLOR_BGR2RGB)
        kp = record.hands[0].kp2d_px
        assert (kp >= 0).all() and (kp[:, 0] < 640).all() and (kp[:, 1] < 480).all()
        # Fingers and palm are on skin; the estimated wrist and a few tips touch the edge.
        assert skin_fraction(image, kp[1:]) >= 0.75
        grid = np.stack(np.meshgrid(np.arange(5, 640, 10), np.arange(5, 480, 10)), -1)
        assert skin_fraction(image, grid.reshape(-1, 2)) < 0.4


def test_bb_views_are_a_rectified_stereo_pair(reader: STBReader) -> None:
    left, right = reader.record(0), reader.record(1)
    assert decode_frame_id(left.frame_id) == ("B1Counting", "BB_left", 0)
    assert decode_frame_id(right.frame_id) == ("B1Counting", "BB_right", 0)
    kp_l, kp_r = left.hands[0].kp2d_px, right.hands[0].kp2d_px
    z_mm = left.hands[0].joints_m[:, 2] * 1000.0
    np.testing.assert_allclose(kp_l[:, 1], kp_r[:, 1], atol=1e-9)
    np.testing.assert_allclose(kp_l[:, 0] - kp_r[:, 0], BB_K[0, 0] * BB_BASELINE_MM / z_mm,
                               rtol=1e-9)
    np.testing.assert_array_equal(reader.split_keys[0], reader.split_keys[1])
    assert left.hands[0].side == "left" and left.mask_path is None


def test_wrist_replaces_the_palm_centre(reader: STBReader) -> None:
    joints = reader.record(0).hands[0].joints_m
    bones = np.linalg.norm(joints[[5, 9, 13, 17]] - joints[0], axis=1)
    assert (bones > 0.06).all() and (bones < 0.14).all()  # wrist-to-MCP lengths, metres


def test_augmented_crops_are_pinhole_images(realdata: Path, tmp_path: Path) -> None:
    ds = build_dataset("stb", realdata, "test", train_aug=True, frame_ids=[0],
                       stb_camera="BB", stb_sequences=["B1Counting"], cache_dir=tmp_path)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            assert s["flipped"] and not s["has_mask"] and s["dataset"] == "stb"
            assert s["visible"].all()
            got = project_points(s["K"].double().numpy(), s["joints_m"].double().numpy())
            np.testing.assert_allclose(got, s["kp2d_px"].double().numpy(), atol=0.01)


def test_default_test_split_needs_both_b1_sequences(realdata: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"B1Random_BB\.mat") as info:
        build_dataset("stb", realdata, "test", train_aug=False, frame_ids=[0],
                      stb_camera="BB", cache_dir=tmp_path)
    assert "Expected layout" in str(info.value)


def test_missing_sk_labels_and_missing_frames_are_named(realdata: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"B1Counting_SK\.mat"):
        STBReader(realdata / "STB", ["B1Counting"], camera="SK", cache_dir=tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"BB_left_1\.png"):
        STBReader(realdata / "STB", ["B1Counting"], camera="BB", frame_ids=[0, 1],
                  cache_dir=tmp_path)


def test_frame_id_round_trip() -> None:
    for seq, view, frame in (("B1Counting", "SK", 0), ("B6Random", "BB_right", 1499)):
        assert decode_frame_id(encode_frame_id(seq, view, frame)) == (seq, view, frame)
