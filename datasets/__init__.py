"""Hand pose datasets: readers of RHD and STB (original formats) and the sample pipeline.

Entry points:

* `build_dataset(name, data_root, split, *, train_aug, ...)` -> `HandDataset` (a torch
  Dataset of sample dicts; keys documented in `datasets.base`).
* `build_datasets(names, data_root, split, *, train_aug, ...)` -> `MixedDataset` of several.
* `utils.crop.crop_to_original(kp2d_px, affine)` maps crop-pixel predictions back
  into the original image with a sample's ``affine``.

Names and where they are read from (``data_root`` is the folder holding them):

    'rhd'        <data_root>/RHD/RHD_published_v2     train/val: training, test: evaluation
    'synth'      <data_root>/SYNTH/RHD/RHD_published_v2  (the project's generator, RHD format)
    'stb'        <data_root>/STB                      train/val: B2-B6, test: B1
    'synth_stb'  <data_root>/SYNTH/STB                (the generator's STB format)
    'coco'       the COCO keypoint files of ReaderOptions.coco_json (MMPose's format)
    'pseudo'     <data_root>/pseudo/<source>/annotations.json (COCO format, every source)
    'hgcnn_real' <data_root>/HandGraphCNN_RealWorld/real_world_testset (evaluation only)

The table is `REGISTRY`; adding a dataset is one reader module plus one `DatasetSpec` line
(or `register_dataset(name, spec)` from outside the package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.base import (
    SAMPLE_KEYS,
    FrameRecord,
    HandAnnotation,
    HandDataset,
    MixedDataset,
    WeightedMixture,
    train_val_indices,
)
from datasets.cache import CacheDir
from datasets.coco import COCOReader, source_name
from datasets.hgcnn import HGCNNRealReader
from datasets.rhd import RHD_PIXEL_OFFSET, SPLIT_FOLDERS, RHDReader
from datasets.stb import TEST_SEQUENCES, TRAIN_SEQUENCES, STBReader
from datasets.transforms import AugmentConfig, CropConfig
from utils.crop import crop_to_original
from utils.heatmap import HEATMAP_STRIDE, HeatmapCodec
from utils.image_io import AnnotationFormatError, DatasetLayoutError, ImageReadError

__all__ = [
    "SAMPLE_KEYS", "AnnotationFormatError", "AugmentConfig", "CropConfig", "DatasetLayoutError",
    "FrameRecord", "HandAnnotation", "HandDataset", "HeatmapCodec", "ImageReadError",
    "MixedDataset", "RHDReader", "STBReader", "build_dataset", "build_datasets",
    "crop_to_original", "dataset_root", "COCOReader", "HGCNNRealReader", "REGISTRY",
    "DatasetSpec", "ReaderOptions", "WeightedMixture", "register_dataset", "dataset_spec",
    "split_by_source",
]  # fmt: skip

# The synthetic generator renders in OpenCV's convention already (pixel centres at integers).
SYNTH_PIXEL_OFFSET = 0.0


@dataclass(frozen=True)
class ReaderOptions:
    """Reader-specific options, in one object (each reader reads the fields it knows).

    Attributes:
        hands: RHD: 'one' (the hand with more mask pixels) or 'both'.
        stb_camera: STB camera 'SK' (BiHand) | 'BB' | 'BB_left' | 'BB_right'.
        stb_sequences: STB sequences to read instead of the split's default ones.
        stb_val_sequences: STB: whole training sequences used as 'val' (None: hash split).
        coco_json: 'coco': annotation files (or folders holding annotations.json).
        coco_keypoint_order: 'coco': 'canonical' (MediaPipe/FreiHAND) or 'rhd'.
        pseudo_sources: 'pseudo': the sources (sub-folders) to read; None: all.
        skip_bad_annotations: COCO readers drop malformed annotations (counted) instead of
            raising.
    """

    hands: str = "one"
    stb_camera: str = "SK"
    stb_sequences: tuple[str, ...] | None = None
    stb_val_sequences: tuple[str, ...] | None = None
    coco_json: tuple[str, ...] = ()
    coco_keypoint_order: str = "canonical"
    pseudo_sources: tuple[str, ...] | None = None
    skip_bad_annotations: bool = False


class ConcatReader:
    """Several readers as one; records keep their own dataset names.

    Split keys are offset per reader so that keys of different readers never collide.
    """

    def __init__(self, readers: Sequence[Any], name: str) -> None:
        if not readers:
            raise ValueError(f"{name}: no reader to combine")
        self.readers = list(readers)
        self.name = name
        self._starts = np.cumsum([0] + [len(r) for r in self.readers])
        self.split_keys = np.concatenate([
            np.asarray(r.split_keys, dtype=np.int64) + (i << 40)
            for i, r in enumerate(self.readers)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def record(self, index: int) -> FrameRecord:
        part = int(self.part_of(np.array([index]))[0])
        return self.readers[part].record(index - int(self._starts[part]))

    def part_of(self, indices: np.ndarray) -> np.ndarray:
        """The position of the reader that holds each record index."""
        return np.searchsorted(self._starts, np.asarray(indices), side="right") - 1


def split_by_source(dataset: HandDataset) -> list[HandDataset]:
    """One dataset per reader of a combined dataset (several ``--coco_json`` files), in order.

    The parts keep the combined dataset's records, so its train/val split: a combined
    reader's split keys depend on each reader's position, and splitting the built dataset
    (rather than building each file alone) keeps them. A dataset of one reader is its own
    only part.
    """
    reader = dataset.reader
    if not isinstance(reader, ConcatReader):
        return [dataset]
    part = reader.part_of(dataset.indices)
    return [dataset.subset(dataset.indices[part == p], sub.name)
            for p, sub in enumerate(reader.readers)]


def _rhd_reader(name: str, offset: float) -> Callable[..., Any]:
    def make(root: Path, split: str, frame_ids: Iterable[int] | None, pixel_offset: float | None,
             cache_dir: CacheDir, opts: ReaderOptions) -> Any:
        return RHDReader(root, SPLIT_FOLDERS[split], name=name, frame_ids=frame_ids,
                         hands=opts.hands, pixel_offset=offset if pixel_offset is None
                         else pixel_offset, cache_dir=cache_dir)
    return make


def _stb_sequences(split: str, opts: ReaderOptions) -> tuple[str, ...]:
    if opts.stb_sequences is not None:
        return tuple(opts.stb_sequences)
    if split == "test":
        return TEST_SEQUENCES
    if opts.stb_val_sequences:
        val_seqs = tuple(opts.stb_val_sequences)
        bad = [s for s in val_seqs if s not in TRAIN_SEQUENCES]
        if bad:
            raise ValueError(f"stb_val_sequences must be training sequences, got {bad}")
        return val_seqs if split == "val" else tuple(
            s for s in TRAIN_SEQUENCES if s not in val_seqs)
    return TRAIN_SEQUENCES


def _stb_reader(name: str) -> Callable[..., Any]:
    def make(root: Path, split: str, frame_ids: Iterable[int] | None, pixel_offset: float | None,
             cache_dir: CacheDir, opts: ReaderOptions) -> Any:
        return STBReader(root, _stb_sequences(split, opts), camera=opts.stb_camera, name=name,
                         frame_ids=frame_ids, pixel_offset=pixel_offset or 0.0,
                         cache_dir=cache_dir)
    return make


def _coco_reader(root: Path, split: str, frame_ids: Iterable[int] | None,
                 pixel_offset: float | None, cache_dir: CacheDir, opts: ReaderOptions) -> Any:
    if not opts.coco_json:
        raise ValueError("dataset 'coco' needs the annotation files: pass --coco_json FILE "
                         "[FILE ...] (COCO keypoints JSON, or folders holding annotations.json)")
    readers = [COCOReader(Path(p) if Path(p).is_absolute() or Path(p).exists() else root / p,
                          name=f"coco/{source_name(p)}",
                          keypoint_order=opts.coco_keypoint_order,
                          pixel_offset=pixel_offset or 0.0,
                          skip_bad_annotations=opts.skip_bad_annotations)
               for p in opts.coco_json]
    return readers[0] if len(readers) == 1 else ConcatReader(readers, "coco")


def pseudo_sources(root: Path) -> list[str]:
    """The source folders of a pseudo-label root (each holds annotations.json)."""
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: pseudo-label folder not found (expected "
                                 f"<data_root>/pseudo/<source>/annotations.json)")
    return sorted(p.parent.name for p in root.glob("*/annotations.json"))


def _pseudo_reader(root: Path, split: str, frame_ids: Iterable[int] | None,
                   pixel_offset: float | None, cache_dir: CacheDir, opts: ReaderOptions) -> Any:
    available = pseudo_sources(root)
    wanted = list(opts.pseudo_sources) if opts.pseudo_sources else available
    unknown = sorted(set(wanted) - set(available))
    if unknown or not wanted:
        raise DatasetLayoutError(f"{root}: pseudo-label sources {unknown or wanted} not found; "
                                 f"available: {available}")
    readers = [COCOReader(root / src, name=f"pseudo/{src}", pixel_offset=pixel_offset or 0.0,
                          skip_bad_annotations=opts.skip_bad_annotations) for src in wanted]
    return readers[0] if len(readers) == 1 else ConcatReader(readers, "pseudo")


def _hgcnn_reader(root: Path, split: str, frame_ids: Iterable[int] | None,
                  pixel_offset: float | None, cache_dir: CacheDir, opts: ReaderOptions) -> Any:
    if split != "test":
        raise ValueError("hgcnn_real is an evaluation set: only split 'test' exists (it must "
                         "not be trained on)")
    return HGCNNRealReader(root, frame_ids=frame_ids)


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry.

    Attributes:
        root: the dataset's folder relative to ``data_root``.
        make_reader: (root, split, frame_ids, pixel_offset, cache_dir, ReaderOptions) ->
            a reader (see `datasets.base.Reader`) of that split.
        split: 'hash' ('train'/'val' are carved from the training records by a seeded
            hash of the reader's split keys) or 'none' (an evaluation set: 'test' only).
        generator: how to create the data when missing ('synthetic' or None).
        description: one line for --help and the README.
    """

    root: str
    make_reader: Callable[..., Any]
    split: str = "hash"
    generator: str | None = None
    description: str = ""


# Adding a dataset = a reader module + one line here.
REGISTRY: dict[str, DatasetSpec] = {
    "rhd": DatasetSpec("RHD/RHD_published_v2", _rhd_reader("rhd", RHD_PIXEL_OFFSET),
                       description="RHD v1.1; train/val: training, test: evaluation"),
    "synth": DatasetSpec("SYNTH/RHD/RHD_published_v2", _rhd_reader("synth", SYNTH_PIXEL_OFFSET),
                         generator="synthetic",
                         description="the project's synthetic hands, RHD format"),
    "stb": DatasetSpec("STB", _stb_reader("stb"),
                       description="STB; train/val: B2-B6, test: B1"),
    "synth_stb": DatasetSpec("SYNTH/STB", _stb_reader("synth_stb"), generator="synthetic",
                             description="the generator's STB-format part"),
    "coco": DatasetSpec(".", _coco_reader,
                        description="COCO keypoint files given by --coco_json (MMPose format)"),
    "pseudo": DatasetSpec("pseudo", _pseudo_reader,
                          description="pseudo-labelled real photos, <data_root>/pseudo/<source>"),
    "hgcnn_real": DatasetSpec("HandGraphCNN_RealWorld/real_world_testset", _hgcnn_reader,
                              split="none",
                              description="hand-graph-cnn real-world photos (evaluation only)"),
}
DATASET_NAMES = tuple(REGISTRY)


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add a dataset to the registry (the CLIs take their choices from it)."""
    if name in REGISTRY:
        raise ValueError(f"dataset {name!r} is already registered")
    REGISTRY[name] = spec


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; a clear error for unknown names."""
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {tuple(REGISTRY)}")
    return REGISTRY[name]


def dataset_root(name: str, data_root: Path | str) -> Path:
    """The folder a dataset name is read from (see the module docstring)."""
    return Path(data_root) / dataset_spec(name).root


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
    heatmap_size: int | None = None,
    sigma: float = 2.0,
    zero_invisible: bool = False,
    crop_factor: float = 2.0,
    aug: AugmentConfig | None = None,
    cache_dir: CacheDir = None,
    pixel_offset: float | None = None,
    stb_camera: str = "SK",
    stb_sequences: Sequence[str] | None = None,
    stb_val_sequences: Sequence[str] | None = None,
    options: ReaderOptions | None = None,
) -> HandDataset:
    """One dataset split as a torch Dataset of sample dicts.

    Args:
        name: a registry name (`REGISTRY`: rhd, synth, stb, synth_stb, coco, pseudo,
            hgcnn_real, and any registered later).
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
        input_size, sigma, zero_invisible: the model's `HeatmapCodec`
            (`HeatmapCodec.for_input_size`: heatmaps and masks of a quarter of the input side).
        heatmap_size: that quarter (None: derived); any other value is refused.
        crop_factor: crop side = factor x max side of the keypoint box.
        aug: augmentation ranges (default `AugmentConfig()`).
        cache_dir: annotation cache folder; None = user cache, False = off.
        pixel_offset: override the reader's pixel-convention offset (RHD: -0.5,
            synth: 0, STB: 0).
        stb_camera: STB camera 'SK' (BiHand) | 'BB' | 'BB_left' | 'BB_right'.
        stb_sequences: STB sequences to read instead of the split's default ones.
        stb_val_sequences: STB: use these whole training sequences as 'val' instead of
            the hash split (None or empty: hash split).
        options: all reader-specific options in one object (replaces ``hands`` and the
            ``stb_*`` arguments when given).

    Returns:
        A `HandDataset`.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    spec = dataset_spec(name)
    if options is None:
        options = ReaderOptions(
            hands=hands, stb_camera=stb_camera,
            stb_sequences=None if stb_sequences is None else tuple(stb_sequences),
            stb_val_sequences=tuple(stb_val_sequences) if stb_val_sequences else None)
    root = dataset_root(name, data_root)
    if spec.split == "none" and split != "test":
        raise ValueError(f"{name} is an evaluation set: only split 'test' exists")
    reader = spec.make_reader(root, split, frame_ids, pixel_offset, cache_dir, options)
    indices = None
    whole_sequence_split = name in ("stb", "synth_stb") and bool(options.stb_val_sequences)
    if split in ("train", "val") and not whole_sequence_split:
        indices = train_val_indices(reader.split_keys, split, val_fraction, split_seed)
    codec = HeatmapCodec.for_input_size(input_size, sigma=sigma, zero_invisible=zero_invisible)
    if heatmap_size is not None and heatmap_size != codec.heatmap_size:
        raise ValueError(f"heatmap_size must be input_size / {HEATMAP_STRIDE} = "
                         f"{codec.heatmap_size}, got {heatmap_size}")
    return HandDataset(reader, indices, train_aug=train_aug, seed=seed,
                       crop=CropConfig(out_size=input_size, factor=crop_factor), aug=aug,
                       codec=codec)


def build_datasets(names: Sequence[str], data_root: Path | str, split: str, *,
                   train_aug: bool, weights: Sequence[float] | None = None,
                   **kwargs: Any) -> MixedDataset | WeightedMixture:
    """Several datasets mixed into one (`build_dataset` for each name, same kwargs).

    Without ``weights`` the datasets are concatenated (each sample once per epoch); with
    them, an epoch draws from each dataset its weight's share of samples (`WeightedMixture`).
    """
    parts = [build_dataset(n, data_root, split, train_aug=train_aug, **kwargs) for n in names]
    if weights is None:
        return MixedDataset(parts)
    return WeightedMixture(parts, weights, seed=kwargs.get("seed", 0))

