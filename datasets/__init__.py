"""Hand pose datasets: readers of RHD and STB (original formats) and the sample pipeline.

Entry points:

* `build_dataset(name, data_root, split, *, train_aug, ...)` -> `HandDataset` (a torch
  Dataset of sample dicts; keys documented in `datasets.base`).
* `build_datasets(names, data_root, split, *, train_aug, ...)` -> `MixedDataset` of several.
* `datasets.transforms.crop_to_original(kp2d_px, affine)` maps crop-pixel predictions back
  into the original image with a sample's ``affine``.

Names and where they are read from (``data_root`` is the folder holding them):

    'rhd'        <data_root>/RHD/RHD_published_v2     train/val: training, test: evaluation
    'synth'      <data_root>/SYNTH/RHD/RHD_published_v2  (the project's generator, RHD format)
    'stb'        <data_root>/STB                      train/val: B2-B6, test: B1
    'synth_stb'  <data_root>/SYNTH/STB                (the generator's STB format)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from datasets.base import (
    SAMPLE_KEYS,
    AnnotationFormatError,
    DatasetLayoutError,
    FrameRecord,
    HandAnnotation,
    HandDataset,
    ImageReadError,
    MixedDataset,
    train_val_indices,
)
from datasets.cache import CacheDir
from datasets.rhd import RHD_PIXEL_OFFSET, SPLIT_FOLDERS, RHDReader
from datasets.stb import TEST_SEQUENCES, TRAIN_SEQUENCES, STBReader
from datasets.transforms import AugmentConfig, CropConfig, crop_to_original
from utils.heatmap import HeatmapCodec

__all__ = [
    "SAMPLE_KEYS", "AnnotationFormatError", "AugmentConfig", "CropConfig", "DatasetLayoutError",
    "FrameRecord", "HandAnnotation", "HandDataset", "HeatmapCodec", "ImageReadError",
    "MixedDataset", "RHDReader", "STBReader", "build_dataset", "build_datasets",
    "crop_to_original", "dataset_root",
]  # fmt: skip

DATASET_NAMES = ("rhd", "synth", "stb", "synth_stb")
# The synthetic generator renders in OpenCV's convention already (pixel centres at integers).
SYNTH_PIXEL_OFFSET = 0.0


def dataset_root(name: str, data_root: Path | str) -> Path:
    """The folder a dataset name is read from (see the module docstring)."""
    data_root = Path(data_root)
    roots = {
        "rhd": data_root / "RHD" / "RHD_published_v2",
        "synth": data_root / "SYNTH" / "RHD" / "RHD_published_v2",
        "stb": data_root / "STB",
        "synth_stb": data_root / "SYNTH" / "STB",
    }
    if name not in roots:
        raise ValueError(f"unknown dataset {name!r}; known: {DATASET_NAMES}")
    return roots[name]


def build_dataset(
    name: str,
    data_root: Path | str,
    split: str,
    *,
    train_aug: bool,
    seed: int = 0,
    split_seed: int = 0,
    val_fraction: float = 0.05,
    frame_ids: Iterable[int] | None = None,
    hands: str = "one",
    input_size: int = 256,
    heatmap_size: int = 64,
    sigma: float = 2.0,
    zero_invisible: bool = False,
    crop_factor: float = 2.0,
    aug: AugmentConfig | None = None,
    cache_dir: CacheDir = None,
    pixel_offset: float | None = None,
    stb_camera: str = "SK",
    stb_sequences: Sequence[str] | None = None,
    stb_val_sequences: Sequence[str] | None = None,
) -> HandDataset:
    """One dataset split as a torch Dataset of sample dicts.

    Args:
        name: 'rhd' | 'synth' | 'stb' | 'synth_stb'.
        data_root: folder holding RHD/, STB/ and SYNTH/ (see the module docstring).
        split: 'train' | 'val' | 'test'. 'val' is carved from the training frames by a
            seeded hash of frame ids (``val_fraction``, ``split_seed``); 'train' excludes them.
        train_aug: random crop jitter, rotation, colour jitter and blur.
        seed: augmentation seed (per sample: seed, epoch, index; call ``set_epoch``).
        split_seed: seed of the train/val hash (keep it fixed across runs).
        val_fraction: share of training frames in 'val'.
        frame_ids: only these frames (RHD: frame numbers of the folder; STB: frame numbers
            0-1499 in every sequence). Needed for partial copies such as ../shared/realdata.
        hands: RHD only: 'one' (the hand with more mask pixels) or 'both'.
        input_size, heatmap_size, sigma, zero_invisible: `HeatmapCodec` settings.
        crop_factor: crop side = factor x max side of the keypoint box.
        aug: augmentation ranges (default `AugmentConfig()`).
        cache_dir: annotation cache folder; None = user cache, False = off.
        pixel_offset: override the reader's pixel-convention offset (RHD: -0.5,
            synth: 0, STB: 0).
        stb_camera: STB camera 'SK' (BiHand) | 'BB' | 'BB_left' | 'BB_right'.
        stb_sequences: STB sequences to read instead of the split's default ones.
        stb_val_sequences: STB: use these whole training sequences as 'val' instead of
            the hash split (None or empty: hash split).

    Returns:
        A `HandDataset`.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    root = dataset_root(name, data_root)
    if name in ("rhd", "synth"):
        offset = pixel_offset if pixel_offset is not None else (
            RHD_PIXEL_OFFSET if name == "rhd" else SYNTH_PIXEL_OFFSET)
        reader: Any = RHDReader(root, SPLIT_FOLDERS[split], name=name, frame_ids=frame_ids,
                                hands=hands, pixel_offset=offset, cache_dir=cache_dir)
    else:
        if stb_sequences is not None:
            sequences = tuple(stb_sequences)
        elif split == "test":
            sequences = TEST_SEQUENCES
        elif stb_val_sequences:
            val_seqs = tuple(stb_val_sequences)
            bad = [s for s in val_seqs if s not in TRAIN_SEQUENCES]
            if bad:
                raise ValueError(f"stb_val_sequences must be training sequences, got {bad}")
            sequences = val_seqs if split == "val" else tuple(
                s for s in TRAIN_SEQUENCES if s not in val_seqs)
        else:
            sequences = TRAIN_SEQUENCES
        reader = STBReader(root, sequences, camera=stb_camera, name="stb" if name == "stb"
                           else "synth_stb", frame_ids=frame_ids,
                           pixel_offset=0.0 if pixel_offset is None else pixel_offset,
                           cache_dir=cache_dir)
    indices = None
    whole_sequence_split = name in ("stb", "synth_stb") and bool(stb_val_sequences)
    if split in ("train", "val") and not whole_sequence_split:
        indices = train_val_indices(reader.split_keys, split, val_fraction, split_seed)
    codec = HeatmapCodec(input_size, heatmap_size, sigma, zero_invisible=zero_invisible)
    return HandDataset(reader, indices, train_aug=train_aug, seed=seed,
                       crop=CropConfig(out_size=input_size, factor=crop_factor), aug=aug,
                       codec=codec, mask_size=heatmap_size)


def build_datasets(names: Sequence[str], data_root: Path | str, split: str, *,
                   train_aug: bool, **kwargs: Any) -> MixedDataset:
    """Several datasets mixed into one (`build_dataset` for each name, same kwargs)."""
    return MixedDataset([build_dataset(n, data_root, split, train_aug=train_aug, **kwargs)
                         for n in names])

