"""Crops without a hand, for the hand-vs-no-hand evaluation of confidence scores.

Two kinds, both deterministic in a seed:

* ``real``: square background patches cut from COCO-format hand crops (e.g. the pseudo-label
  crops, ``pseudo/<source>/annotations.json``). A patch never overlaps any labelled hand's
  keypoint box enlarged 1.2x about its centre (the hands of other crops of the same photo
  included, through ``crop_to_source``), and never reaches into zero padding: those
  crops are padded with exact black where the photo ended, so a patch (grown by an 8 px margin
  for JPEG ringing) with more than 1 % exactly-black pixels is rejected. Patches are small
  (the hand box fills the middle of a pseudo crop) and are upsampled to the model input.
  JPEG leaves the padding near-black rather than black, so patches are also kept inside the
  crop's photo area (`photo_box`: border bands that are almost all near-black are padding).
* ``synthetic``: the synthetic generator's backgrounds (`datasets.render.make_background`
  plus its camera finish: blur, exposure, noise) rendered at RHD's 320x320 without a hand,
  then a random square of a third to all of the image resized to the model input.

`NoHandDataset` yields ``{'image': (3, S, S) float32 in [0, 1], 'kind', 'source', 'index'}``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.coco import COCOReader, resolve_annotation_file, source_name
from datasets.render import make_background
from datasets.synthetic import RHD_SIZE, camera_finish
from utils.image_io import DatasetLayoutError, read_image_rgb

BOX_FACTOR = 1.2  # hand boxes are enlarged like MMPose's PCK box before excluding them
MAX_BLACK_FRACTION = 0.01
BLACK_MARGIN_PX = 8  # JPEG ringing spreads into the padding up to one 8x8 block
DARK_MAX = 10  # JPEG-compressed zero padding stays at or below this value
PATCH_SIDE_PX = (40, 64)  # the margin around a pseudo crop's hand box is about 66 px
TRIES_PER_IMAGE = 20
DIFFICULTIES = ("easy", "hard", "mixed")
_STREAM_PATCHES = 300
_STREAM_SYNTHETIC = 301


@dataclass(frozen=True)
class BackgroundPatch:
    """A square patch of an image that shows no labelled hand.

    Attributes:
        image_path: the image.
        x, y: top-left corner in the image's pixels.
        side: side length in pixels.
        source: short name of the annotation file it came from.
    """

    image_path: Path
    x: int
    y: int
    side: int
    source: str


def annotation_files(paths: Sequence[Path | str]) -> list[Path]:
    """COCO files from files, folders holding ``annotations.json``, or folders of such
    folders (e.g. ``pseudo/``: every ``pseudo/<source>/annotations.json``)."""
    files: list[Path] = []
    for path in map(Path, paths):
        nested = sorted(path.glob("*/annotations.json")) if path.is_dir() else []
        if path.is_dir() and not (path / "annotations.json").is_file() and nested:
            files.extend(nested)
        else:
            files.append(resolve_annotation_file(path))
    return files


def _own_boxes(reader: COCOReader, factor: float) -> dict[Path, np.ndarray]:
    boxes: dict[Path, list[np.ndarray]] = {}
    for i in range(len(reader)):
        record = reader.record(i)
        for hand in record.hands:
            kp = hand.kp2d_px[hand.visible]
            lo, hi = kp.min(axis=0), kp.max(axis=0)
            centre, half = (lo + hi) / 2.0, factor * (hi - lo) / 2.0
            boxes.setdefault(record.image_path, []).append(np.concatenate([centre - half,
                                                                           centre + half]))
    return {path: np.stack(b) for path, b in boxes.items()}


def _map_boxes(boxes: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(M, 4) boxes through a (3, 3) affine: the boxes around the mapped corners."""
    corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [0, 3]], boxes[:, [2, 3]]],
                       axis=1)  # (M, 4, 2)
    mapped = corners @ affine[:2, :2].T + affine[:2, 2]
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)


def _crop_to_source(annotation_file: Path) -> dict[Path, tuple[str, np.ndarray]]:
    """image path -> (source photo, (3, 3) crop-to-source affine) where the file records them
    (the pseudo-label crops do; other COCO files give an empty dict)."""
    data = json.loads(annotation_file.read_text())
    out = {}
    for img in data.get("images", []):
        if "source" in img and "crop_to_source" in img:
            affine = np.eye(3)
            affine[:2] = np.asarray(img["crop_to_source"], np.float64).reshape(2, 3)
            out[annotation_file.parent / str(img["file_name"])] = (str(img["source"]), affine)
    return out


def hand_boxes(annotation_file: Path | str, factor: float = BOX_FACTOR) -> dict[Path, np.ndarray]:
    """Per image, the (M, 4) boxes x0, y0, x1, y1 of the labelled hands it shows, enlarged
    ``factor`` times about their centres.

    Crops cut from one photo (the pseudo crops record ``source`` and ``crop_to_source``) also
    get each other's hands: a crop of one hand often shows the photo's other hand, which its
    own annotation does not label.
    """
    annotation_file = resolve_annotation_file(annotation_file)
    boxes = _own_boxes(COCOReader(annotation_file, name=source_name(annotation_file)), factor)
    placement = _crop_to_source(annotation_file)
    by_source: dict[str, list[Path]] = {}
    for path in boxes:
        if path in placement:
            by_source.setdefault(placement[path][0], []).append(path)
    merged = dict(boxes)
    for siblings in by_source.values():
        for path in siblings:
            to_crop = np.linalg.inv(placement[path][1])
            others = [_map_boxes(boxes[o], to_crop @ placement[o][1])
                      for o in siblings if o != path]  # fmt: skip
            merged[path] = np.concatenate([boxes[path], *others])
    return merged


def _overlaps(boxes: np.ndarray, x: int, y: int, side: int) -> bool:
    # Patch pixels cover [x - 0.5, x + side - 0.5] in OpenCV's pixel-centre convention.
    x0, y0, x1, y1 = x - 0.5, y - 0.5, x + side - 0.5, y + side - 0.5
    return bool(np.any((boxes[:, 0] < x1) & (boxes[:, 2] > x0) &
                       (boxes[:, 1] < y1) & (boxes[:, 3] > y0)))  # fmt: skip


def photo_box(image_rgb: np.ndarray, dark_max: int = DARK_MAX, band_fraction: float = 0.98
              ) -> tuple[int, int, int, int]:  # fmt: skip
    """The part of a zero-padded crop that shows the photo: (x0, y0, x1, y1), exclusive end.

    Padding bands run along the borders (the crop window left the photo; no rotation). JPEG
    leaves small non-zero values in them, so a border row or column counts as padding while
    at least ``band_fraction`` of its pixels are at most ``dark_max``; dark rows inside the
    photo are never trimmed.
    """
    dark = image_rgb.max(axis=2) <= dark_max
    cols = np.flatnonzero(dark.mean(axis=0) < band_fraction)
    rows = np.flatnonzero(dark.mean(axis=1) < band_fraction)
    if cols.size == 0 or rows.size == 0:
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def black_fraction(image_rgb: np.ndarray, x: int, y: int, side: int,
                   margin: int = BLACK_MARGIN_PX) -> float:  # fmt: skip
    """Share of exactly-black pixels in the patch grown by ``margin`` (clipped to the image)."""
    h, w = image_rgb.shape[:2]
    region = image_rgb[max(0, y - margin):min(h, y + side + margin),
                       max(0, x - margin):min(w, x + side + margin)]  # fmt: skip
    return float((region.max(axis=2) == 0).mean())


def choose_background_patches(
    files: Sequence[Path | str],
    num: int,
    *,
    seed: int = 0,
    side_px: tuple[int, int] = PATCH_SIDE_PX,
    box_factor: float = BOX_FACTOR,
    max_black_fraction: float = MAX_BLACK_FRACTION,
    tries_per_image: int = TRIES_PER_IMAGE,
) -> list[BackgroundPatch]:
    """Pick up to ``num`` background patches, at most one per image, deterministically.

    Images are visited in a seeded random order; in each, up to ``tries_per_image`` random
    squares (side drawn from ``side_px``) inside the photo area (:func:`photo_box`, less a
    8 px margin) are tried until one overlaps no enlarged hand box and holds at most
    ``max_black_fraction`` exactly-black pixels (grown by the margin).

    Args:
        files: COCO keypoint files or folders (see :func:`annotation_files`).
        num: patches wanted.
        seed: seeds the image order and the positions.
        side_px: (min, max) patch side in pixels, inclusive.
        box_factor: enlargement of each hand's keypoint box.
        max_black_fraction: largest allowed share of exactly-black pixels.
        tries_per_image: random positions tried per image.

    Returns:
        The patches (fewer than ``num`` when the images run out, with a warning).
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    lo, hi = side_px
    if not 1 <= lo <= hi:
        raise ValueError(f"side_px must be (min, max) with 1 <= min <= max, got {side_px}")
    images: list[tuple[Path, np.ndarray, str]] = []
    for file in annotation_files(files):
        boxes = hand_boxes(file, box_factor)
        images.extend((path, boxes[path], source_name(file)) for path in sorted(boxes))
    if not images:
        raise DatasetLayoutError(f"no annotated images in {[str(f) for f in files]}")
    rng = np.random.default_rng([seed, _STREAM_PATCHES])
    patches: list[BackgroundPatch] = []
    for index in rng.permutation(len(images)):
        path, boxes, name = images[index]
        image = read_image_rgb(path)
        bx0, by0, bx1, by1 = photo_box(image)
        bx0, by0 = bx0 + BLACK_MARGIN_PX * (bx0 > 0), by0 + BLACK_MARGIN_PX * (by0 > 0)
        bx1 -= BLACK_MARGIN_PX * (bx1 < image.shape[1])
        by1 -= BLACK_MARGIN_PX * (by1 < image.shape[0])
        for _ in range(tries_per_image):
            side = int(rng.integers(lo, hi + 1))
            if side > min(bx1 - bx0, by1 - by0):
                break
            x = int(rng.integers(bx0, bx1 - side + 1))
            y = int(rng.integers(by0, by1 - side + 1))
            if _overlaps(boxes, x, y, side):
                continue
            if black_fraction(image, x, y, side) > max_black_fraction:
                continue
            patches.append(BackgroundPatch(path, x, y, side, name))
            break
        if len(patches) == num:
            break
    if not patches:
        raise DatasetLayoutError(
            f"no background patch of {lo}-{hi} px clear of the hand boxes and of zero padding "
            f"in {len(images)} images of {[str(f) for f in files]}"
        )
    if len(patches) < num:
        warnings.warn(f"found {len(patches)} of {num} background patches in {len(images)} "
                      "images (at most one per image)", UserWarning, stacklevel=2)
    return patches


def render_background_crop(seed: int, index: int, size: int, difficulty: str = "mixed"
                           ) -> np.ndarray:  # fmt: skip
    """A synthetic background without a hand, cropped and resized: (size, size, 3) uint8.

    ``difficulty``: 'easy' (plain or gradient, like easy frames), 'hard' (cluttered) or
    'mixed' (either, half and half).
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    rng = np.random.default_rng([seed, _STREAM_SYNTHETIC, index])
    cluttered = difficulty == "hard" or (difficulty == "mixed" and rng.random() < 0.5)
    image = camera_finish(make_background(rng, RHD_SIZE, RHD_SIZE, cluttered), rng)
    side = int(rng.integers(RHD_SIZE // 3, RHD_SIZE + 1))
    x, y = (int(v) for v in rng.integers(0, RHD_SIZE - side + 1, size=2))
    return resize_square(image[y:y + side, x:x + side], size)


def resize_square(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """A square image resized to ``size`` (area filter when shrinking, bilinear otherwise)."""
    interp = cv2.INTER_AREA if image_rgb.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image_rgb), (size, size), interpolation=interp)


class NoHandDataset(Dataset):
    """Crops without a hand: the real ``patches`` first, then ``num_synthetic`` backgrounds.

    Args:
        size: output side (the model's input size).
        patches: real background patches (:func:`choose_background_patches`).
        num_synthetic: synthetic backgrounds (:func:`render_background_crop`).
        seed: seed of the synthetic backgrounds.
        difficulty: of the synthetic backgrounds.
    """

    def __init__(self, size: int, *, patches: Sequence[BackgroundPatch] = (),
                 num_synthetic: int = 0, seed: int = 0, difficulty: str = "mixed") -> None:
        if size < 1 or num_synthetic < 0:
            raise ValueError(f"size must be >= 1 and num_synthetic >= 0, got {size}, "
                             f"{num_synthetic}")
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
        self.size = size
        self.patches = list(patches)
        self.num_synthetic = num_synthetic
        self.seed = seed
        self.difficulty = difficulty

    def __len__(self) -> int:
        return len(self.patches) + self.num_synthetic

    def image(self, index: int) -> tuple[np.ndarray, str, str]:
        """(crop (size, size, 3) uint8, kind, source) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} crops")
        if index < len(self.patches):
            p = self.patches[index]
            image = read_image_rgb(p.image_path)[p.y:p.y + p.side, p.x:p.x + p.side]
            return resize_square(image, self.size), "real", p.source
        crop = render_background_crop(self.seed, index - len(self.patches), self.size,
                                      self.difficulty)  # fmt: skip
        return crop, "synthetic", f"synthetic_{self.difficulty}"

    def __getitem__(self, index: int) -> dict:
        crop, kind, source = self.image(index)
        tensor = torch.from_numpy(crop.astype(np.float32).transpose(2, 0, 1) / 255.0)
        return {"image": tensor, "kind": kind, "source": source, "index": index}


def build_nohand_dataset(size: int, *, coco_files: Sequence[Path | str] = (), num_real: int = 0,
                         num_synthetic: int = 0, seed: int = 0,
                         difficulty: str = "mixed") -> NoHandDataset:  # fmt: skip
    """Real patches from ``coco_files`` (``num_real`` wanted) plus synthetic backgrounds."""
    patches = (choose_background_patches(coco_files, num_real, seed=seed)
               if coco_files and num_real > 0 else [])  # fmt: skip
    return NoHandDataset(size, patches=patches, num_synthetic=num_synthetic, seed=seed,
                         difficulty=difficulty)
