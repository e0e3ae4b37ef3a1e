"""Data written by the project's synthetic generator, read through build_dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets import SAMPLE_KEYS, build_dataset
from datasets.base import choose_hand, hand_mask
from datasets.synthetic import generate
from utils.geometry import project_points
from utils.image_io import read_label_image


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate(root / "SYNTH", num_train=4, num_test=3, seed=0, difficulty="hard", workers=1,
             stb_frames_per_sequence=1)
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_synth_rhd_format_samples(data_root: Path, cache_dir: Path) -> None:
    for train_aug in (False, True):
        ds = build_dataset("synth", data_root, "test", train_aug=train_aug, cache_dir=cache_dir)
        assert len(ds) == 3
        for i in range(len(ds)):
            s = ds[i]
            assert tuple(s) == SAMPLE_KEYS and s["dataset"] == "synth" and s["has_mask"]
            # The generator labels are exact projections (OpenCV convention, no offset).
            got = project_points(s["K"].double().numpy(), s["joints_m"].double().numpy())
            np.testing.assert_allclose(got, s["kp2d_px"].double().numpy(), atol=0.01)
            record = ds.record(i)
            mask = read_label_image(record.mask_path)
            hand = choose_hand(record, mask)
            assert s["flipped"] == (hand.side == "left")
            crop_mask = cv2.warpAffine(hand_mask(record, hand, mask),
                                       s["affine"].numpy().astype(np.float64), (256, 256),
                                       flags=cv2.INTER_NEAREST)
            kp = np.round(s["kp2d_px"].numpy()[s["visible"].numpy()]).astype(int)
            inside = ((kp >= 0) & (kp < 256)).all(axis=1)
            assert crop_mask[kp[inside, 1], kp[inside, 0]].mean() > 0.8


def test_synth_train_val_split_and_collate(data_root: Path, cache_dir: Path) -> None:
    train = build_dataset("synth", data_root, "train", train_aug=True, val_fraction=0.5,
                          cache_dir=cache_dir)
    val = build_dataset("synth", data_root, "val", train_aug=False, val_fraction=0.5,
                        cache_dir=cache_dir)
    assert len(train) + len(val) == 4
    batch = torch.utils.data.default_collate([train[i] for i in range(len(train))])
    assert batch["heatmaps"].shape == (len(train), 21, 64, 64)


def test_synth_stb_sk_format(data_root: Path, cache_dir: Path) -> None:
    ds = build_dataset("synth_stb", data_root, "test", train_aug=True, cache_dir=cache_dir)
    assert len(ds) == 2  # B1Counting and B1Random, one frame each
    for i in range(len(ds)):
        s = ds[i]
        assert s["flipped"] and not s["has_mask"] and s["dataset"] == "synth_stb"
        assert s["orig_size_wh"].tolist() == [640, 480]
        got = project_points(s["K"].double().numpy(), s["joints_m"].double().numpy())
        np.testing.assert_allclose(got, s["kp2d_px"].double().numpy(), atol=0.01)
    train = build_dataset("synth_stb", data_root, "train", train_aug=False, val_fraction=0.0,
                          cache_dir=cache_dir)
    assert len(train) == 10
    val = build_dataset("synth_stb", data_root, "val", train_aug=False,
                        stb_val_sequences=["B2Counting"], cache_dir=cache_dir)
    assert len(val) == 1 and val[0]["frame_id"] == 200000


def test_stb_depth_seg_mask_is_used_when_present(data_root: Path, cache_dir: Path) -> None:
    """BiHand's SK_depth_seg add-on (any non-zero pixel = hand) becomes the mask target."""
    seg = data_root / "SYNTH" / "STB" / "images" / "B1Counting" / "SK_depth_seg_0.png"
    plain = build_dataset("synth_stb", data_root, "test", train_aug=False, cache_dir=cache_dir)
    kp = plain.record(0).hands[0].kp2d_px
    hull = cv2.convexHull(np.round(kp).astype(np.int32))
    drawn = cv2.fillConvexPoly(np.zeros((480, 640), np.uint8), hull, 255)
    cv2.imwrite(str(seg), drawn)
    try:
        ds = build_dataset("synth_stb", data_root, "test", train_aug=False, cache_dir=cache_dir)
        s = ds[0]
    finally:
        seg.unlink()
    assert s["has_mask"] and not ds[1]["has_mask"]
    kp_hm = np.round(ds.codec.crop_to_heatmap(s["kp2d_px"].numpy())).astype(int)
    assert s["mask"][0].numpy()[kp_hm[:, 1], kp_hm[:, 0]].mean() > 0.8
    assert 0.05 < s["mask"].mean() < 0.6
