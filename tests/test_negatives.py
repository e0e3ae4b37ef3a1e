"""Crops without a hand: background patches clear of hand boxes and padding, synthetic
backgrounds, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets.negatives import (
    NoHandDataset,
    black_fraction,
    build_nohand_dataset,
    choose_background_patches,
    hand_boxes,
    photo_box,
    render_background_crop,
)
from utils.image_io import read_image_rgb

PSEUDO = "pseudo"


def _write_padded_crop(folder: Path) -> Path:
    """A 128x128 JPEG crop: texture, a zero-padded band on the right, one hand box in the
    middle (keypoints spread over x, y in [44, 84]); COCO keypoints file next to it."""
    rng = np.random.default_rng(0)
    image = rng.integers(30, 255, (128, 128, 3), dtype=np.uint8)
    image[:, 100:] = 0
    (folder / "images").mkdir(parents=True)
    cv2.imwrite(str(folder / "images" / "a.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    kp = np.stack([np.linspace(44, 84, 21), np.linspace(84, 44, 21)], axis=1)
    keypoints = np.concatenate([kp, np.full((21, 1), 2.0)], axis=1).reshape(-1).tolist()
    data = {"images": [{"id": 1, "file_name": "images/a.jpg", "width": 128, "height": 128}],
            "annotations": [{"id": 7, "image_id": 1, "keypoints": keypoints,
                             "bbox": [44, 44, 40, 40], "hand_side": "right"}]}  # fmt: skip
    path = folder / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def _in_box(boxes: np.ndarray, x: int, y: int, side: int) -> bool:
    return bool(np.any((boxes[:, 0] < x + side - 0.5) & (boxes[:, 2] > x - 0.5)
                       & (boxes[:, 1] < y + side - 0.5) & (boxes[:, 3] > y - 0.5)))  # fmt: skip


def test_patches_avoid_the_hand_box_and_the_padding(tmp_path: Path) -> None:
    ann = _write_padded_crop(tmp_path / "crops")
    image = read_image_rgb(tmp_path / "crops" / "images" / "a.jpg")
    # JPEG leaves the padding near-black, and its ringing reaches into the band's first block.
    x0, y0, x1, y1 = photo_box(image)
    assert (x0, y0, y1) == (0, 0, 128) and 100 <= x1 <= 104
    boxes = hand_boxes(ann)[tmp_path / "crops" / "images" / "a.jpg"]
    np.testing.assert_allclose(boxes, [[40, 40, 88, 88]])  # 40 px box enlarged 1.2x
    for seed in range(20):
        (patch,) = choose_background_patches([ann], 1, seed=seed, side_px=(16, 24))
        assert not _in_box(boxes, patch.x, patch.y, patch.side)
        assert patch.x + patch.side <= 100  # clear of the padding
        assert black_fraction(image, patch.x, patch.y, patch.side) <= 0.01
    with pytest.raises(ValueError, match="side_px"):
        choose_background_patches([ann], 1, side_px=(30, 20))


def test_synthetic_backgrounds_are_deterministic_crops() -> None:
    ds = NoHandDataset(64, num_synthetic=3, seed=5)
    assert len(ds) == 3
    item = ds[1]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["kind"] == "synthetic"
    assert torch.equal(item["image"], NoHandDataset(64, num_synthetic=3, seed=5)[1]["image"])
    assert not np.array_equal(render_background_crop(5, 1, 64), render_background_crop(6, 1, 64))
    assert render_background_crop(0, 0, 32, "hard").shape == (32, 32, 3)
    with pytest.raises(ValueError, match="difficulty"):
        render_background_crop(0, 0, 32, "medium")
    with pytest.raises(IndexError):
        ds.image(3)


@pytest.mark.realdata
def test_pseudo_crop_patches(realdata: Path) -> None:
    files = [realdata / PSEUDO / "ti1k", realdata / PSEUDO / "hands_subhi"]
    patches = choose_background_patches(files, 24, seed=0)
    assert len(patches) == 24
    assert patches == choose_background_patches(files, 24, seed=0)
    assert patches != choose_background_patches(files, 24, seed=1)
    assert {p.source for p in patches} == {"ti1k", "hands_subhi"}
    boxes = {**hand_boxes(files[0]), **hand_boxes(files[1])}
    for p in patches:
        image = read_image_rgb(p.image_path)
        assert not _in_box(boxes[p.image_path], p.x, p.y, p.side)
        assert black_fraction(image, p.x, p.y, p.side) <= 0.01
        x0, y0, x1, y1 = photo_box(image)
        assert x0 <= p.x and p.x + p.side <= x1 and y0 <= p.y and p.y + p.side <= y1
    ds = build_nohand_dataset(128, coco_files=files, num_real=4, num_synthetic=2)
    assert [ds[i]["kind"] for i in range(len(ds))] == ["real"] * 4 + ["synthetic"] * 2
    assert ds[0]["image"].shape == (3, 128, 128)


@pytest.mark.realdata
def test_crops_of_one_photo_exclude_each_others_hands(realdata: Path) -> None:
    # hands_subhi has photos with two kept hands, cut into two crops; each crop must also
    # avoid the other hand, which its own annotation does not label.
    boxes = hand_boxes(realdata / PSEUDO / "hands_subhi")
    shared = [b for b in boxes.values() if len(b) > 1]
    assert len(shared) > 100
    # Somewhere the other hand is inside the crop, away from the crop's own hand.
    inside = [b for b in shared if np.any((b[1:, 2] > 0) & (b[1:, 0] < 256))]
    assert inside
