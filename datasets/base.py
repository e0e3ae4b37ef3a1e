"""Record types, the sample pipeline, the train/val split and the mixing wrapper.

A dataset reader (``datasets/rhd.py``, ``datasets/stb.py``) only parses annotations. It is
an object with

* ``name``: the dataset name put into samples ('rhd', 'stb', 'synth', ...),
* ``__len__()`` and ``record(i) -> FrameRecord``: one record per sample candidate,
* ``split_keys``: (N,) int64 keys hashed for the train/val split (frames that must stay
  together, e.g. the two stereo views of one STB frame, share a key).

`HandDataset` turns records into samples (one affine crop, heatmaps, mask) with the
augmentation drawn from a generator seeded by (seed, epoch, index, dataset stream).

Sample keys (exactly these; the default collate stacks them):

    image            float32 (3, 256, 256) RGB in [0, 1], NOT normalised (the model does it)
    heatmaps         float32 (21, 64, 64)  Gaussian targets, sigma 2 heatmap pixels
    heatmap_weights  float32 (21,)         0 for joints not supervised (see HeatmapCodec)
    mask             float32 (1, 64, 64)   0/1 mask of the chosen hand (zeros if none)
    has_mask         bool                  False when the dataset has no mask for the frame
    kp2d_px          float32 (21, 2)       keypoints in crop pixels (OpenCV pixel centres)
    visible          bool (21,)            the dataset's visibility flags
    kp2d_orig_px     float32 (21, 2)       keypoints in the original image file's pixels
    orig_size_wh     int64 (2,)            original image width, height
    affine           float32 (2, 3)        original pixels -> crop pixels, flip included
    flipped          bool                  the sample was mirrored (left hand -> right)
    K                float32 (3, 3)        crop intrinsics (after flip, rotation, crop);
                                           NaN when the dataset has no camera (COCO)
    joints_m         float32 (21, 3)       3D joints in the crop camera frame, metres;
                                           project_points(K, joints_m) == kp2d_px (for
                                           RHD up to its label noise, median 0.04 px);
                                           NaN when the dataset has no 3D labels (COCO)
    has_3d           bool                  K and joints_m hold real values
    dataset          str                   reader name: 'rhd' | 'stb' | 'synth' | ...
    frame_id         int                   frame id in the reader (see each reader)

All keypoint arrays are in the canonical 21-joint order of `utils.joints`.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from datasets.transforms import (
    AugmentConfig,
    CropConfig,
    GeometricParams,
    compute_crop,
    occlude,
    photometric,
    sample_geometric,
)
from utils.crop import warp_image, warp_mask
from utils.heatmap import HeatmapCodec
from utils.image_io import (
    AnnotationFormatError,
    ImageReadError,
    read_image_rgb,
    read_label_image,
)

SAMPLE_KEYS: tuple[str, ...] = (
    "image", "heatmaps", "heatmap_weights", "mask", "has_mask", "kp2d_px", "visible",
    "kp2d_orig_px", "orig_size_wh", "affine", "flipped", "K", "joints_m", "has_3d",
    "dataset", "frame_id",
)  # fmt: skip


@dataclass(frozen=True)
class HandAnnotation:
    """One hand of a frame, in the ORIGINAL image and camera (nothing mirrored yet).

    Attributes:
        side: 'left' or 'right'.
        kp2d_px: (21, 2) float64 labels, original pixels, OpenCV convention.
        visible: (21,) bool visibility flags of the dataset.
        joints_m: (21, 3) float64 joints in the camera frame, metres; None when the dataset
            has no 3D labels.
        mask_ids: ids of this hand's pixels in the frame's mask image (empty: no mask).
    """

    side: str
    kp2d_px: np.ndarray
    visible: np.ndarray
    joints_m: np.ndarray | None
    mask_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.side not in ("left", "right"):
            raise ValueError(f"hand side must be 'left' or 'right', got {self.side!r}")


@dataclass(frozen=True)
class FrameRecord:
    """One sample candidate: an image, its camera and one or more candidate hands.

    When ``hands`` holds several hands, the sample uses the one with the most pixels in
    the mask (ties and missing masks: the most visible joints, then the first listed).

    Attributes:
        dataset: reader name put into the sample.
        frame_id: id of the frame (see the reader for its meaning).
        image_path: the RGB image file.
        K: (3, 3) float64 intrinsics of the image, OpenCV convention; None when the
            dataset has no camera (the crop then rotates about the image centre).
        hands: the candidate hands.
        mask_path: a label image whose pixel values are hand ids, or None.
        mask_is_binary: the mask marks the hand with any non-zero value (not with ids).
    """

    dataset: str
    frame_id: int
    image_path: Path
    K: np.ndarray | None
    hands: tuple[HandAnnotation, ...]
    mask_path: Path | None = None
    mask_is_binary: bool = False


class Reader(Protocol):
    """What `HandDataset` needs from a dataset reader."""

    name: str
    split_keys: np.ndarray

    def __len__(self) -> int: ...

    def record(self, index: int) -> FrameRecord: ...


def choose_hand(record: FrameRecord, mask: np.ndarray | None) -> HandAnnotation:
    """The hand a sample uses (see `FrameRecord`)."""
    if len(record.hands) == 1:
        return record.hands[0]
    if not record.hands:
        raise ValueError(f"{record.dataset} frame {record.frame_id}: record has no hand")
    counts = (cv2.calcHist([mask], [0], None, [256], [0, 256]).ravel() if mask is not None
              else np.zeros(256))
    best = max(range(len(record.hands)),
               key=lambda h: (int(counts[list(record.hands[h].mask_ids)].sum()),
                              int(record.hands[h].visible.sum()), -h))
    return record.hands[best]


def hand_mask(record: FrameRecord, hand: HandAnnotation, mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 0/1 mask of ``hand`` from the frame's label image."""
    if record.mask_is_binary:
        return (mask > 0).astype(np.uint8)
    lut = np.zeros(256, dtype=np.uint8)
    lut[list(hand.mask_ids)] = 1
    return cv2.LUT(mask, lut)


# --- the sample pipeline ------------------------------------------------------------------


def make_sample(record: FrameRecord, image: np.ndarray, mask: np.ndarray | None, *,
                codec: HeatmapCodec, crop: CropConfig, aug: AugmentConfig | None,
                rng: np.random.Generator | None) -> dict[str, Any]:
    """Turn one record and its decoded images into a sample dict (see module docstring).

    Args:
        record: the frame.
        image: (H, W, 3) uint8 RGB original image.
        mask: (H, W) uint8 label image, or None.
        codec: heatmap codec (its input size must equal ``crop.out_size``; the mask target
            has its heatmap size).
        crop: crop framing.
        aug: augmentation ranges, or None for none (evaluation).
        rng: generator for the augmentation (required when ``aug`` is given).
    """
    if codec.input_size != crop.out_size:
        raise ValueError(f"codec input_size {codec.input_size} != crop size {crop.out_size}")
    hand = choose_hand(record, mask)
    height, width = image.shape[:2]
    params = GeometricParams()
    if aug is not None:
        if rng is None:
            raise ValueError("augmentation needs a random generator")
        params = sample_geometric(rng, aug)
    has_3d = record.K is not None and hand.joints_m is not None
    if hand.joints_m is not None and not (hand.joints_m[:, 2] > 0).any():
        raise AnnotationFormatError(f"{record.image_path}: {record.dataset} frame "
                                    f"{record.frame_id}, {hand.side} hand has no joint in front "
                                    f"of the camera; cannot frame a crop")
    geo = compute_crop(hand.kp2d_px, hand.joints_m, record.K, (width, height),
                       flip=hand.side == "left", crop=crop, params=params)
    crop_img = warp_image(image, geo.affine, crop.out_size).astype(np.float32)
    crop_img *= np.float32(1.0 / 255.0)
    if aug is not None:
        crop_img = photometric(crop_img, rng, aug)
        crop_img = occlude(crop_img, rng, aug)
    mask_size = codec.heatmap_size
    has_mask = mask is not None and (record.mask_is_binary or bool(hand.mask_ids))
    if has_mask:
        mask_t = warp_mask(hand_mask(record, hand, mask), geo.affine, crop.out_size, mask_size)
    else:
        mask_t = np.zeros((mask_size, mask_size), dtype=np.uint8)
    heatmaps, weights = codec.encode(geo.kp2d_px, hand.visible)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(crop_img.transpose(2, 0, 1))),
        "heatmaps": torch.from_numpy(heatmaps),
        "heatmap_weights": torch.from_numpy(weights),
        "mask": torch.from_numpy(mask_t.astype(np.float32)[None]),
        "has_mask": bool(has_mask),
        "kp2d_px": torch.from_numpy(geo.kp2d_px.astype(np.float32)),
        "visible": torch.from_numpy(np.asarray(hand.visible, dtype=bool).copy()),
        "kp2d_orig_px": torch.from_numpy(hand.kp2d_px.astype(np.float32)),
        "orig_size_wh": torch.from_numpy(np.array([width, height], dtype=np.int64)),
        "affine": torch.from_numpy(geo.affine[:2].astype(np.float32)),
        "flipped": bool(geo.flipped),
        "K": torch.from_numpy(geo.K.astype(np.float32)),
        "joints_m": torch.from_numpy(geo.joints_m.astype(np.float32)),
        "has_3d": has_3d,
        "dataset": record.dataset,
        "frame_id": int(record.frame_id),
    }


class HandDataset(Dataset):
    """Samples of one reader (a subset of its records) as a torch Dataset.

    Args:
        reader: the dataset reader.
        indices: reader record indices in this dataset (None: all).
        train_aug: draw geometric and photometric augmentation.
        seed: augmentation seed; each sample's generator is seeded by (seed, epoch, index,
            a stream id of the reader name), so runs are reproducible with any number of
            loader workers.
        crop: crop framing.
        aug: augmentation ranges (used when ``train_aug``).
        codec: heatmap codec (default: ``HeatmapCodec.for_input_size(crop.out_size)``); the
            mask target has its heatmap size.

    Attributes:
        name: the reader's name (a `subset` has its own), as logs and mixtures show it.
    """

    def __init__(self, reader: Reader, indices: Sequence[int] | np.ndarray | None = None, *,
                 train_aug: bool, seed: int = 0, crop: CropConfig | None = None,
                 aug: AugmentConfig | None = None, codec: HeatmapCodec | None = None) -> None:
        self.reader = reader
        self.indices = (np.arange(len(reader), dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        self.train_aug = bool(train_aug)
        self.seed = int(seed)
        self.crop = crop or CropConfig()
        self.aug = aug or AugmentConfig()
        self.codec = codec or HeatmapCodec.for_input_size(self.crop.out_size)
        self.epoch = 0
        self.name = reader.name
        self._stream = zlib.crc32(reader.name.encode())

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before each training epoch)."""
        self.epoch = int(epoch)

    def record(self, index: int) -> FrameRecord:
        """The reader record behind sample ``index``."""
        return self.reader.record(int(self.indices[index]))

    def subset(self, indices: Sequence[int] | np.ndarray, name: str) -> HandDataset:
        """The same dataset over other reader records, named ``name``.

        Args:
            indices: reader record indices (the reader's, not this dataset's).
            name: the subset's name, which also seeds its augmentation stream, so that two
                subsets of one reader draw different augmentations for the same index.
        """
        out = copy.copy(self)
        out.indices = np.asarray(indices, dtype=np.int64)
        out.name = name
        out._stream = zlib.crc32(name.encode())
        return out

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index), self._stream])

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        record = self.record(index)
        image = read_image_rgb(record.image_path)
        mask = read_label_image(record.mask_path) if record.mask_path is not None else None
        if mask is not None and mask.shape != image.shape[:2]:
            raise ImageReadError(f"{record.mask_path}: mask size {mask.shape[::-1]} differs "
                                 f"from image {record.image_path} {image.shape[1::-1]}")
        aug = self.aug if self.train_aug else None
        rng = self.rng(index) if self.train_aug else None
        return make_sample(record, image, mask, codec=self.codec, crop=self.crop, aug=aug,
                           rng=rng)


class MixedDataset(ConcatDataset):
    """Several `HandDataset` objects as one (concatenated); `set_epoch` reaches all."""

    def __init__(self, datasets: Sequence[HandDataset]) -> None:
        if not datasets:
            raise ValueError("MixedDataset needs at least one dataset")
        super().__init__(list(datasets))

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to every member dataset."""
        for ds in self.datasets:
            ds.set_epoch(epoch)


class WeightedMixture(Dataset):
    """Datasets drawn with fixed shares per epoch, whatever their sizes.

    An epoch has ``epoch_size`` samples (default: the members' total); dataset ``d`` gets
    ``round(weight_d / sum(weights) * epoch_size)`` of them, taken from a seeded permutation
    of its samples, cycled when it has fewer. The table is a function of (seed, epoch), so
    every loader worker that calls ``set_epoch`` builds the same one.

    Args:
        datasets: the member datasets.
        weights: one non-negative sampling weight per dataset (not all zero).
        epoch_size: samples per epoch.
        seed: seed of the per-epoch draws.
    """

    def __init__(self, datasets: Sequence[HandDataset], weights: Sequence[float],
                 epoch_size: int | None = None, seed: int = 0) -> None:
        if not datasets:
            raise ValueError("WeightedMixture needs at least one dataset")
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(datasets),):
            raise ValueError(f"need one weight per dataset ({len(datasets)}), got "
                             f"{weights.tolist()}")
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"dataset weights must be finite, >= 0 and not all 0, got "
                             f"{weights.tolist()}")
        empty = [i for i, d in enumerate(datasets) if len(d) == 0 and weights[i] > 0]
        if empty:
            raise ValueError(f"datasets {empty} have a positive weight but no samples")
        self.datasets = list(datasets)
        self.weights = weights / weights.sum()
        self.epoch_size = int(epoch_size or sum(len(d) for d in datasets))
        self.seed = int(seed)
        counts = np.floor(self.weights * self.epoch_size).astype(np.int64)
        # Largest remainders get the samples left over by the floor.
        rest = self.epoch_size - int(counts.sum())
        counts[np.argsort(-(self.weights * self.epoch_size - counts), kind="stable")[:rest]] += 1
        self.counts = counts
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.epoch_size

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's table and forward the epoch to every member."""
        self.epoch = int(epoch)
        parts, inner = [], []
        for d, (ds, count) in enumerate(zip(self.datasets, self.counts, strict=True)):
            ds.set_epoch(epoch)
            if count == 0:
                continue
            rng = np.random.default_rng([self.seed, self.epoch, d, 0x6D6978])
            reps = -(-int(count) // len(ds))
            order = np.concatenate([rng.permutation(len(ds)) for _ in range(reps)])[:count]
            parts.append(np.full(count, d, dtype=np.int64))
            inner.append(order)
        self._part = np.concatenate(parts)
        self._inner = np.concatenate(inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.datasets[int(self._part[index])][int(self._inner[index])]


# --- train / val split ----------------------------------------------------------------------


def hash_unit(keys: np.ndarray, seed: int = 0) -> np.ndarray:
    """A seeded hash of int keys to [0, 1) (splitmix64), stable across platforms."""
    mask64 = np.uint64(0xFFFFFFFFFFFFFFFF)
    x = np.asarray(keys, dtype=np.int64).astype(np.uint64)
    x = (x + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)) & mask64
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def train_val_indices(split_keys: np.ndarray, split: str, val_fraction: float,
                      seed: int = 0) -> np.ndarray:
    """Indices of the 'train' or 'val' part of training records, by a seeded key hash."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val' here, got {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    is_val = hash_unit(split_keys, seed) < val_fraction
    return np.flatnonzero(is_val if split == "val" else ~is_val)
