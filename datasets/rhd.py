"""Reader of the Rendered Hand pose Dataset (RHD v1.1) in its original format.

Also reads the project's synthetic data, which the generator writes in RHD's format.

Frame ids are RHD's own indices (the image file name ``%05d.png``) within the folder
('training' or 'evaluation').

Pixel convention. RHD was rendered with Blender with cx = cy = 160 = W / 2, i.e. in the
continuous convention (pixel centre at x + 0.5); this reader subtracts 0.5 px from the
labels and the principal point once (RHD_PIXEL_OFFSET), giving OpenCV's convention. Evidence
from the 136 real evaluation frames in ../shared/realdata (reproduce with
``python bench/bench_dataloader.py --convention``):

* Fingertip labels on the chosen hand's mask (mean bilinear mask value at the 665 visible
  fingertips): shift 0: 0.808, shift -0.5: 0.893, shift -1.0: 0.925 (all visible joints:
  0.950 / 0.970 / 0.978), so -0.5 beats 0, but the score keeps rising past -0.5.
* Finger-part centroids of the mask vs the bone midpoints of the labels (perpendicular
  component, least squares over 2,096 segments of both hands): the labels sit
  (+0.87, +1.06) px right/below the mask (bootstrap s.d. about 0.05; every finger, part and
  hand side gives 0.6-1.4 px in both axes).
* The mask itself sits up-left of the colour image: edge alignment of the blurred hand mask
  with the colour image's gradients peaks at a mask shift of (+0.34, +0.35) px. The method
  returns 0 on an ideal supersampled disc but (+0.22, +0.19) on the project's synthetic
  frames, whose mask and image share one pixel grid, so it carries a scene bias of about
  0.2 px; the RHD mask is then 0.15-0.35 px up-left of the image.
* Control: on the synthetic RHD-format data (OpenCV convention by construction) the
  part-centroid fit gives (0.00, 0.00) px, so that fit itself is unbiased.

Conclusion: relative to the image, RHD's labels sit +0.5 to +0.9 px right/below the
content; the continuous convention (-0.5, what cx = W / 2 in a Blender render means) is
applied. It beats 0 clearly; -1 (a 1-based convention) is not excluded by these data, the
remaining doubt is below a quarter of a heatmap pixel. Pass ``pixel_offset`` to change it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from datasets.base import FrameRecord, HandAnnotation
from datasets.cache import CacheDir, cached_arrays
from utils.image_io import AnnotationFormatError, DatasetLayoutError, read_mat
from utils.joints import RHD_LEFT_ROWS, RHD_RIGHT_ROWS, RHD_TO_CANONICAL
from utils.safe_pickle import restricted_load

# Added to RHD's (u, v) labels and principal point to reach OpenCV's pixel convention
# (continuous -> integer pixel centres; measurements in the module docstring).
RHD_PIXEL_OFFSET = -0.5

SPLIT_FOLDERS = {"train": "training", "val": "training", "test": "evaluation"}
LEFT_MASK_IDS = tuple(range(2, 18))
RIGHT_MASK_IDS = tuple(range(18, 34))
PARSER_KIND = "rhd-v1"

RHD_LAYOUT = """\
<data_root>/RHD/RHD_published_v2/          (synthetic data: <data_root>/SYNTH/RHD/RHD_published_v2/)
    training/
        anno_training.pickle   (or anno_training.mat: structs frame0, frame1, ...)
        color/00000.png ...    RGB images
        mask/00000.png ...     label images: 0 background, 1 person, 2-17 left hand,
                               18-33 right hand
    evaluation/
        anno_evaluation.pickle (or anno_evaluation.mat)
        color/00000.png ...
        mask/00000.png ...
Each annotation entry: 'uv_vis' (42, 3) [u, v, visible], 'xyz' (42, 3) metres, 'K' (3, 3);
rows 0-20 left hand, 21-41 right hand (wrist, then each finger tip -> MCP)."""


def _layout_error(message: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{message}\nExpected layout:\n{RHD_LAYOUT}")


def _format_error(message: str) -> AnnotationFormatError:
    return AnnotationFormatError(f"{message}\nExpected layout:\n{RHD_LAYOUT}")


def _entry_arrays(entry: object, source: Path, frame: int) -> tuple[np.ndarray, ...]:
    out = []
    for key, shape in (("uv_vis", (42, 3)), ("xyz", (42, 3)), ("K", (3, 3))):
        try:
            value = np.asarray(entry[key], dtype=np.float32)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise _format_error(
                f"{source}: frame {frame} has no numeric field {key!r} ({e})") from e
        if value.shape != shape:
            raise _format_error(f"{source}: frame {frame} field {key!r} has shape "
                                f"{value.shape}, expected {shape}")
        out.append(value)
    return tuple(out)


def parse_annotation_file(path: Path) -> dict[str, np.ndarray]:
    """Parse ``anno_<split>.pickle`` or ``.mat`` into stacked arrays.

    Returns:
        dict with 'frame_ids' (N,) int64, 'uv_vis' (N, 42, 3), 'xyz' (N, 42, 3) and
        'K' (N, 3, 3) float32, in RHD's own row order and pixel convention.
    """
    if path.suffix == ".pickle":
        data = restricted_load(path, encoding="latin1")
        if not isinstance(data, dict) or not data:
            raise _format_error(f"{path}: expected a non-empty dict {{frame id: "
                                f"{{'uv_vis', 'xyz', 'K'}}}}, got {type(data).__name__}")
        items = sorted(data.items())
        if not all(isinstance(k, int) for k, _ in items):
            raise _format_error(f"{path}: dict keys must be int frame ids")
        frames = [k for k, _ in items]
        entries = [v for _, v in items]
    else:
        mat = read_mat(path, RHD_LAYOUT)
        frames = sorted(int(k[5:]) for k in mat if k.startswith("frame") and k[5:].isdigit())
        if not frames:
            raise _format_error(f"{path}: no 'frame<N>' structs found")
        entries = []
        for f in frames:
            struct = mat[f"frame{f}"]
            if struct.dtype.names is None:
                raise _format_error(f"{path}: frame{f} is not a struct with fields "
                                    f"uv_vis, xyz, K")
            entries.append({name: struct[0, 0][name] for name in struct.dtype.names})
    arrays = [_entry_arrays(e, path, f) for f, e in zip(frames, entries, strict=True)]
    return {
        "frame_ids": np.asarray(frames, dtype=np.int64),
        "uv_vis": np.stack([a[0] for a in arrays]),
        "xyz": np.stack([a[1] for a in arrays]),
        "K": np.stack([a[2] for a in arrays]),
    }


def check_finite_labels(arrays: dict[str, np.ndarray], source: Path) -> None:
    """Raise `AnnotationFormatError` naming the file, frame and field of the first NaN/inf in
    'uv_vis', 'xyz' or 'K' (such labels would crash the crop or pass into samples)."""
    for key in ("uv_vis", "xyz", "K"):
        values = arrays[key]
        bad_frames = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
        if len(bad_frames):
            first = int(bad_frames[0])
            bad_rows = np.flatnonzero(~np.isfinite(values[first]).all(axis=-1)).tolist()
            frame_ids = arrays["frame_ids"][bad_frames].tolist()
            raise _format_error(
                f"{source}: frame {frame_ids[0]} field {key!r} holds non-finite values "
                f"(NaN/inf) in rows {bad_rows}; {len(bad_frames)} frame(s) have non-finite "
                f"{key!r}, e.g. {frame_ids[:5]}")


def find_annotation_file(split_dir: Path, folder: str) -> Path:
    """``anno_<folder>.pickle`` if present, else ``.mat``; raises with the layout."""
    for suffix in (".pickle", ".mat"):
        path = split_dir / f"anno_{folder}{suffix}"
        if path.is_file():
            return path
    raise _layout_error(f"{split_dir}: neither anno_{folder}.pickle nor anno_{folder}.mat found")


class RHDReader:
    """Annotations of one RHD folder ('training' or 'evaluation').

    Args:
        root: the ``RHD_published_v2`` folder.
        folder: 'training' or 'evaluation'.
        name: dataset name put into samples ('rhd' or 'synth').
        frame_ids: only these frame ids (None: all annotated frames). Every requested frame
            must be annotated and have its image (and mask, if a mask folder exists).
        hands: 'one' = per frame the hand with more mask pixels (BiHand, Zimmermann & Brox);
            'both' = every hand with at least ``min_visible`` visible joints.
        min_visible: see ``hands``.
        pixel_offset: added to labels and principal point to reach OpenCV's convention.
        cache_dir: annotation cache folder (see `datasets.cache`).
    """

    def __init__(self, root: Path | str, folder: str, *, name: str = "rhd",
                 frame_ids: Iterable[int] | None = None, hands: str = "one",
                 min_visible: int = 10, pixel_offset: float = RHD_PIXEL_OFFSET,
                 cache_dir: CacheDir = None) -> None:
        root = Path(root)
        if folder not in ("training", "evaluation"):
            raise ValueError(f"folder must be 'training' or 'evaluation', got {folder!r}")
        if hands not in ("one", "both"):
            raise ValueError(f"hands must be 'one' or 'both', got {hands!r}")
        if not root.is_dir():
            raise _layout_error(f"{root}: RHD root folder not found")
        split_dir = root / folder
        if not split_dir.is_dir():
            raise _layout_error(f"{split_dir}: RHD split folder not found")
        self.name = name
        self.root = root
        self.split_dir = split_dir
        self.pixel_offset = float(pixel_offset)
        self.annotation_path = find_annotation_file(split_dir, folder)
        arrays = cached_arrays(self.annotation_path, PARSER_KIND,
                               lambda: parse_annotation_file(self.annotation_path), cache_dir)
        check_finite_labels(arrays, self.annotation_path)
        self._select_frames(arrays, frame_ids)
        self._check_files()
        self.unannotated_images = self._report_unannotated(arrays["frame_ids"])
        self._build_index(hands, min_visible)

    def _select_frames(self, arrays: dict[str, np.ndarray],
                       frame_ids: Iterable[int] | None) -> None:
        all_ids = arrays["frame_ids"]
        if frame_ids is None:
            rows = np.arange(len(all_ids))
        else:
            wanted = np.asarray(sorted({int(f) for f in frame_ids}), dtype=np.int64)
            rows = np.searchsorted(all_ids, wanted)
            rows = np.clip(rows, 0, len(all_ids) - 1)
            missing = wanted[all_ids[rows] != wanted]
            if len(missing):
                raise AnnotationFormatError(
                    f"{self.annotation_path}: {len(missing)} requested frame ids are not "
                    f"annotated, e.g. {missing[:5].tolist()}")
        self.frame_ids = all_ids[rows]
        uv_vis = arrays["uv_vis"][rows].astype(np.float64)
        self._uv = uv_vis[..., :2] + self.pixel_offset  # (N, 42, 2)
        self._vis = uv_vis[..., 2] > 0.5  # (N, 42)
        self._xyz = arrays["xyz"][rows].astype(np.float64)
        K = arrays["K"][rows].astype(np.float64)
        K[:, 0, 2] += self.pixel_offset
        K[:, 1, 2] += self.pixel_offset
        self._K = K

    def image_path(self, frame_id: int) -> Path:
        """The colour image of a frame."""
        return self.split_dir / "color" / f"{frame_id:05d}.png"

    def mask_path(self, frame_id: int) -> Path | None:
        """The mask of a frame (None when the split has no mask folder)."""
        return self.split_dir / "mask" / f"{frame_id:05d}.png" if self._has_masks else None

    def _check_files(self) -> None:
        color_dir = self.split_dir / "color"
        if not color_dir.is_dir():
            raise _layout_error(f"{color_dir}: RHD colour image folder not found")
        self._has_masks = (self.split_dir / "mask").is_dir()
        present = {p.name for p in color_dir.iterdir()}
        missing = [int(f) for f in self.frame_ids if f"{f:05d}.png" not in present]
        if missing:
            raise _layout_error(
                f"{color_dir}: {len(missing)} of {len(self.frame_ids)} requested frames have no "
                f"image, first {self.image_path(missing[0])} (frames {missing[:5]}...); pass "
                f"frame_ids= to read a subset")
        if self._has_masks:
            present = {p.name for p in (self.split_dir / "mask").iterdir()}
            missing = [int(f) for f in self.frame_ids if f"{f:05d}.png" not in present]
            if missing:
                raise _layout_error(f"{self.split_dir / 'mask'}: {len(missing)} requested "
                                    f"frames have no mask, first {self.mask_path(missing[0])}")

    def _report_unannotated(self, annotated: np.ndarray) -> int:
        """Count (and warn about) colour images that have no annotation entry: they are never
        used, and a silent skip would hide a truncated annotation file."""
        color_dir = self.split_dir / "color"
        names = {f"{int(f):05d}.png" for f in annotated}
        images = [p.name for p in color_dir.iterdir()
                  if p.suffix == ".png" and p.stem.isdigit()]  # fmt: skip
        extra = sorted(n for n in images if n not in names)
        if extra:
            warnings.warn(
                f"{color_dir}: {len(extra)} of {len(images)} images have no entry in "
                f"{self.annotation_path} and are not used, e.g. {extra[:3]}",
                UserWarning,
                stacklevel=3,
            )
        return len(extra)

    def _build_index(self, hands: str, min_visible: int) -> None:
        n = len(self.frame_ids)
        if hands == "one":
            self._rows = np.arange(n)
            self._sides = np.full(n, -1)  # -1: choose by mask at load time
        else:
            vis_left = self._vis[:, RHD_LEFT_ROWS].sum(axis=1)
            vis_right = self._vis[:, RHD_RIGHT_ROWS].sum(axis=1)
            rows, sides = [], []
            for side, counts in ((0, vis_left), (1, vis_right)):
                ok = np.flatnonzero(counts >= min_visible)
                rows.append(ok)
                sides.append(np.full(len(ok), side))
            order = np.lexsort((np.concatenate(sides), np.concatenate(rows)))
            self._rows = np.concatenate(rows)[order]
            self._sides = np.concatenate(sides)[order]
        self.split_keys = self.frame_ids[self._rows]

    def __len__(self) -> int:
        return len(self._rows)

    def labels_rhd_order(self) -> tuple[np.ndarray, np.ndarray]:
        """All selected frames' labels in RHD's 42-row order (for diagnostics).

        Returns:
            uv: (N, 42, 2) labels with ``pixel_offset`` applied; visible: (N, 42) bool.
        """
        return self._uv.copy(), self._vis.copy()

    def _hand(self, row: int, side: int) -> HandAnnotation:
        rows = RHD_LEFT_ROWS if side == 0 else RHD_RIGHT_ROWS
        order = list(RHD_TO_CANONICAL)
        return HandAnnotation(
            side="left" if side == 0 else "right",
            kp2d_px=self._uv[row, rows][order],
            visible=self._vis[row, rows][order],
            joints_m=self._xyz[row, rows][order],
            mask_ids=LEFT_MASK_IDS if side == 0 else RIGHT_MASK_IDS,
        )

    def record(self, index: int) -> FrameRecord:
        """Record ``index`` (hands='one': both hands, chosen by mask when loaded)."""
        row = int(self._rows[index])
        side = int(self._sides[index])
        frame = int(self.frame_ids[row])
        hands = (self._hand(row, 0), self._hand(row, 1)) if side < 0 else (self._hand(row, side),)
        return FrameRecord(dataset=self.name, frame_id=frame, image_path=self.image_path(frame),
                           K=self._K[row], hands=hands, mask_path=self.mask_path(frame))
