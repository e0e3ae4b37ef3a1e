"""Reader of hand keypoints in COCO keypoint format (MMPose's hand sets, the pseudo labels).

One sample per annotation. A file is a COCO keypoints JSON:

    images       [{id, file_name (relative to the JSON's folder), width, height, ...}]
    annotations  [{id, image_id, keypoints [x, y, v] * 21, bbox [x, y, w, h],
                   hand_side | hand_type ('left' | 'right', optional), ...}]

The ``v`` flags are the visibility (``v > 0`` = labelled and visible; COCO's ``v = 1``,
labelled but occluded, counts as visible because the position is known). Joints with
``v = 0`` are unlabelled: their position is not used (weight 0), whatever it holds.
Keypoints are in the file's ``keypoint_order`` ('canonical', which is MediaPipe's and
FreiHAND's, or 'rhd' for MMPose's converted RHD json, fingers tip to MCP) and in OpenCV's
pixel convention unless ``pixel_offset`` says otherwise.

COCO files carry no camera and no 3D joints: records have ``K = None`` and
``joints_m = None``, so their samples hold NaN intrinsics and joints and
``has_3d = False`` (losses and metrics that need 3D skip them).

Bad input is an `AnnotationFormatError` naming the file and the annotation id (wrong
keypoint count, non-finite coordinates, a bbox outside the image, an unknown side, an
image id without an image entry) or a `DatasetLayoutError` for a missing image file.
``skip_bad_annotations=True`` drops such annotations instead and counts them in
``reader.dropped`` (also printed as one warning).
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.base import FrameRecord, HandAnnotation
from utils.image_io import AnnotationFormatError, DatasetLayoutError
from utils.joints import NUM_JOINTS, RHD_TO_CANONICAL

KEYPOINT_ORDERS: dict[str, tuple[int, ...]] = {
    "canonical": tuple(range(NUM_JOINTS)),
    "rhd": RHD_TO_CANONICAL,
}
# A bbox may reach this far past the image border (pixels) before it counts as outside.
BBOX_TOLERANCE_PX = 1.0
LAYOUT = (
    "  <folder>/annotations.json   COCO keypoints: 'images' [{id, file_name, width, height}],\n"
    "                              'annotations' [{id, image_id, keypoints [x, y, v] * 21,\n"
    "                              bbox [x, y, w, h], hand_side: 'left' | 'right'}]\n"
    "  <folder>/<file_name>        the images named there (relative to the JSON's folder)"
)


class _BadAnnotation(ValueError):
    """One annotation is malformed (turned into AnnotationFormatError or counted)."""


def source_name(path: Path | str) -> str:
    """A short name of a COCO file: its folder for ``annotations.json``, else its stem."""
    path = Path(path)
    if path.is_dir() or path.name == "annotations.json":
        return (path if path.is_dir() else path.parent).name
    return path.stem


def resolve_annotation_file(path: Path | str) -> Path:
    """A COCO JSON file, or a folder holding ``annotations.json``."""
    path = Path(path)
    candidate = path / "annotations.json" if path.is_dir() else path
    if not candidate.is_file():
        raise DatasetLayoutError(f"{candidate}: COCO keypoint annotation file not found.\n"
                                 f"Expected layout:\n{LAYOUT}")
    return candidate


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationFormatError(f"{path}: not a readable JSON file ({e})\n"
                                    f"Expected layout:\n{LAYOUT}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("annotations"), list):
        raise AnnotationFormatError(f"{path}: expected a JSON object with 'images' and "
                                    f"'annotations' lists\nExpected layout:\n{LAYOUT}")
    return data


def _parse_keypoints(ann: dict[str, Any], order: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    raw = ann.get("keypoints")
    try:
        kp = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _BadAnnotation(f"'keypoints' holds a value that is not a number ({e})") from e
    # COCO stores a flat [x, y, v] * 21 list; MMPose's converted RHD json nests (21, 3).
    if kp.size != 3 * NUM_JOINTS or kp.ndim not in (1, 2):
        raise _BadAnnotation(f"'keypoints' must hold {3 * NUM_JOINTS} numbers ({NUM_JOINTS} "
                             f"joints x [x, y, v]), got shape {kp.shape}")
    kp = kp.reshape(NUM_JOINTS, 3)
    visible = kp[:, 2] > 0
    xy = kp[:, :2]
    bad = visible & ~np.isfinite(xy).all(axis=1)
    if bad.any() or not np.isfinite(kp[:, 2]).all():
        raise _BadAnnotation(f"non-finite keypoint coordinates for joints "
                             f"{np.flatnonzero(bad).tolist()}")
    xy = np.where(visible[:, None], xy, np.nan)
    index = list(order)
    return xy[index], visible[index]


def _check_bbox(ann: dict[str, Any], width: float, height: float) -> None:
    bbox = ann.get("bbox")
    if bbox is None:
        return
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError) as e:
        raise _BadAnnotation(f"'bbox' must be [x, y, w, h], got {bbox!r}") from e
    if not np.isfinite([x, y, w, h]).all() or w < 0 or h < 0:
        raise _BadAnnotation(f"'bbox' {bbox} is not a finite box with w, h >= 0")
    tol = BBOX_TOLERANCE_PX
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise _BadAnnotation(f"'bbox' {bbox} lies outside the {width:g}x{height:g} image")


def _side(ann: dict[str, Any], default_side: str) -> str:
    side = ann.get("hand_side", ann.get("hand_type", default_side))
    if side not in ("left", "right"):
        raise _BadAnnotation(f"unknown hand side {side!r} (expected 'left' or 'right')")
    return side


class COCOReader:
    """Hands of one COCO keypoints file, one record per annotation.

    Args:
        annotation_file: the JSON file, or a folder holding ``annotations.json``.
        name: dataset name put into samples (default 'coco').
        keypoint_order: 'canonical' (MediaPipe / FreiHAND, the default) or 'rhd'.
        default_side: side of annotations without ``hand_side`` / ``hand_type``.
        pixel_offset: added to the keypoints to reach OpenCV's pixel convention.
        skip_bad_annotations: drop malformed annotations (counted in ``dropped``) instead
            of raising.
        image_ids: only annotations of these image ids (None: all).
    """

    def __init__(self, annotation_file: Path | str, *, name: str = "coco",
                 keypoint_order: str = "canonical", default_side: str = "right",
                 pixel_offset: float = 0.0, skip_bad_annotations: bool = False,
                 image_ids: Sequence[int] | None = None) -> None:
        if keypoint_order not in KEYPOINT_ORDERS:
            raise ValueError(f"keypoint_order must be one of {sorted(KEYPOINT_ORDERS)}, "
                             f"got {keypoint_order!r}")
        if default_side not in ("left", "right"):
            raise ValueError(f"default_side must be 'left' or 'right', got {default_side!r}")
        self.name = name
        self.annotation_path = resolve_annotation_file(annotation_file)
        self.root = self.annotation_path.parent
        self.dropped = 0
        data = _load_json(self.annotation_path)
        images = {}
        for img in data["images"]:
            if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
                raise AnnotationFormatError(f"{self.annotation_path}: image entry {img!r} needs "
                                            f"'id' and 'file_name'\nExpected layout:\n{LAYOUT}")
            images[int(img["id"])] = img
        wanted = None if image_ids is None else {int(i) for i in image_ids}
        order = KEYPOINT_ORDERS[keypoint_order]
        self._records: list[FrameRecord] = []
        present: dict[Path, set[str]] = {}
        annotated: set[int] = set()
        for ann in data["annotations"]:
            ann_id = ann.get("id", "?") if isinstance(ann, dict) else "?"
            try:
                record = self._record(ann, images, order, default_side, pixel_offset, wanted,
                                      present)
            except _BadAnnotation as e:
                if not skip_bad_annotations:
                    raise AnnotationFormatError(
                        f"{self.annotation_path}: annotation id {ann_id}: {e}") from None
                self.dropped += 1
                continue
            if record is not None:
                self._records.append(record)
                annotated.add(int(ann["image_id"]))
        if self.dropped:
            warnings.warn(f"{self.annotation_path}: dropped {self.dropped} malformed "
                          f"annotation(s) (--skip_bad_annotations)", UserWarning, stacklevel=2)
        unlabelled = [i for i in images if i not in annotated and (wanted is None or i in wanted)]
        self.unannotated_images = len(unlabelled)
        # Annotations of one image share a key, so they stay together in the train/val split.
        self.split_keys = np.array([zlib.crc32(str(r.image_path.relative_to(self.root))
                                               .encode()) for r in self._records], dtype=np.int64)

    def _record(self, ann: Any, images: dict[int, dict[str, Any]], order: tuple[int, ...],
                default_side: str, pixel_offset: float, wanted: set[int] | None,
                present: dict[Path, set[str]]) -> FrameRecord | None:
        if not isinstance(ann, dict) or "id" not in ann or "image_id" not in ann:
            raise _BadAnnotation("an annotation needs 'id' and 'image_id'")
        image_id = int(ann["image_id"])
        if wanted is not None and image_id not in wanted:
            return None
        img = images.get(image_id)
        if img is None:
            raise _BadAnnotation(f"image_id {image_id} has no entry in 'images'")
        kp2d_px, visible = _parse_keypoints(ann, order)
        if not visible.any():
            raise _BadAnnotation("no labelled keypoint (every v is 0)")
        width, height = img.get("width"), img.get("height")
        if width is not None and height is not None:
            _check_bbox(ann, float(width), float(height))
        side = _side(ann, default_side)
        image_path = self.root / str(img["file_name"])
        folder = image_path.parent
        if folder not in present:
            present[folder] = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        if image_path.name not in present[folder]:
            raise DatasetLayoutError(f"{self.annotation_path}: annotation id {ann['id']}: image "
                                     f"{image_path} not found\nExpected layout:\n{LAYOUT}")
        hand = HandAnnotation(side=side, kp2d_px=kp2d_px + pixel_offset, visible=visible,
                              joints_m=None)
        return FrameRecord(dataset=self.name, frame_id=int(ann["id"]), image_path=image_path,
                           K=None, hands=(hand,))

    def __len__(self) -> int:
        return len(self._records)

    def record(self, index: int) -> FrameRecord:
        """Record ``index`` (one annotation)."""
        return self._records[index]
