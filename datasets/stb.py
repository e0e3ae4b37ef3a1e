"""Reader of the Stereo Hand Pose Tracking Benchmark (STB) in its original format.

Cameras: 'SK' (Intel SR300 colour images; labels in the depth camera's frame, converted to
the colour camera with `datasets.stb_calibration.sk_depth_to_color`; BiHand's protocol) or
the Bumblebee stereo pair 'BB' (both views), 'BB_left', 'BB_right' (labels in the left
camera's frame; Zimmermann & Brox's protocol). STB's palm centre is replaced by a wrist
estimate (`utils.joints.stb_palm_to_wrist`, or another ``wrist_fn``). All hands are left
hands, so every sample is mirrored. 2D labels are the projections of the 3D labels with the
calibrated intrinsics. ``pixel_offset`` defaults to 0, i.e. we assume the calibration used
OpenCV's convention (as the common MATLAB calibration toolbox does: pixel centres at integer
coordinates from 0); this is an assumption, not verified to sub-pixel precision on the single
labelled real frame (its keypoints fall on the hand in both views, see tests/test_stb.py).

Frame ids: ``sequence_index * 100000 + view_code * 10000 + frame`` with ``sequence_index``
the position in `SEQUENCES` (B1Counting 0, B1Random 1, B2Counting 2, ...), ``view_code``
0 SK, 1 BB_left, 2 BB_right, and ``frame`` the image number (0-1499); see
`decode_frame_id`. Both views of one frame share a split key, so they land in the same
train/val part.

Masks: STB has none; BiHand's add-on ``SK_depth_seg_<frame>.png`` (any non-zero pixel =
hand, assumed registered to the colour image) is used when present for SK samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from datasets.base import FrameRecord, HandAnnotation
from datasets.cache import CacheDir, cached_arrays
from datasets.stb_calibration import BB_K, SK_COLOR_K, bb_left_to_right, sk_depth_to_color
from utils.geometry import project_points
from utils.image_io import AnnotationFormatError, DatasetLayoutError, read_mat
from utils.joints import NUM_JOINTS, STB_TO_CANONICAL, stb_palm_to_wrist

SEQUENCES: tuple[str, ...] = tuple(f"B{i}{kind}" for i in range(1, 7)
                                   for kind in ("Counting", "Random"))
TEST_SEQUENCES: tuple[str, ...] = ("B1Counting", "B1Random")
TRAIN_SEQUENCES: tuple[str, ...] = tuple(s for s in SEQUENCES if s not in TEST_SEQUENCES)
VIEW_CODES = {"SK": 0, "BB_left": 1, "BB_right": 2}
CAMERA_VIEWS = {"SK": ("SK",), "BB": ("BB_left", "BB_right"), "BB_left": ("BB_left",),
                "BB_right": ("BB_right",)}
IMAGE_PATTERNS = {"SK": "SK_color_{}.png", "BB_left": "BB_left_{}.png",
                  "BB_right": "BB_right_{}.png"}
MASK_PATTERN = "SK_depth_seg_{}.png"
PARSER_KIND = "stb-v1"

STB_LAYOUT = """\
<data_root>/STB/                         (synthetic data: <data_root>/SYNTH/STB/)
    labels/
        B1Counting_SK.mat  B1Counting_BB.mat  B1Random_SK.mat ... B6Random_BB.mat
                           each holds 'handPara' (3, 21, frames) in millimetres
    images/
        B1Counting/
            SK_color_0.png ...              SK colour camera, 640x480
            SK_depth_seg_0.png ...          (optional BiHand hand masks)
            BB_left_0.png ... BB_right_0.png  Bumblebee stereo pair, 640x480
        B1Random/ ... B6Random/
Test split: B1Counting, B1Random; train: B2-B6 Counting and Random."""


def _layout_error(message: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"{message}\nExpected layout:\n{STB_LAYOUT}")


def _format_error(message: str) -> AnnotationFormatError:
    return AnnotationFormatError(f"{message}\nExpected layout:\n{STB_LAYOUT}")


def encode_frame_id(sequence: str, view: str, frame: int) -> int:
    """The sample frame id of (sequence, view, frame) (see the module docstring)."""
    return SEQUENCES.index(sequence) * 100000 + VIEW_CODES[view] * 10000 + int(frame)


def decode_frame_id(frame_id: int) -> tuple[str, str, int]:
    """(sequence, view, frame) of a sample frame id."""
    seq, rest = divmod(int(frame_id), 100000)
    code, frame = divmod(rest, 10000)
    view = {v: k for k, v in VIEW_CODES.items()}[code]
    return SEQUENCES[seq], view, frame


def parse_label_file(path: Path) -> dict[str, np.ndarray]:
    """``handPara`` of an STB label file as 'joints_mm' (frames, 21, 3) float64 (STB order)."""
    mat = read_mat(path, STB_LAYOUT)
    if "handPara" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise _format_error(f"{path}: no 'handPara' variable (found {keys}); expected "
                            f"handPara (3, 21, frames) in mm")
    para = np.asarray(mat["handPara"], dtype=np.float64)
    if para.ndim != 3 or para.shape[:2] != (3, NUM_JOINTS):
        raise _format_error(f"{path}: handPara has shape {para.shape}, expected "
                            f"(3, {NUM_JOINTS}, frames)")
    return {"joints_mm": np.ascontiguousarray(para.transpose(2, 1, 0))}


def check_finite_joints(joints_mm: np.ndarray, source: Path) -> None:
    """Raise `AnnotationFormatError` naming the file, frame and joints of the first NaN/inf
    in ``handPara`` ((frames, 21, 3) as parsed)."""
    bad_frames = np.flatnonzero(~np.isfinite(joints_mm.reshape(len(joints_mm), -1)).all(axis=1))
    if len(bad_frames):
        first = int(bad_frames[0])
        joints = np.flatnonzero(~np.isfinite(joints_mm[first]).all(axis=-1)).tolist()
        raise _format_error(f"{source}: frame {first} field 'handPara' holds non-finite values "
                            f"(NaN/inf) at joints {joints} (STB order); {len(bad_frames)} "
                            f"frame(s) affected, e.g. {bad_frames[:5].tolist()}")


class STBReader:
    """Annotations of some STB sequences seen by one camera.

    Args:
        root: the ``STB`` folder (holding ``labels/`` and ``images/``).
        sequences: sequence names, e.g. `TEST_SEQUENCES`.
        camera: 'SK', 'BB' (both views), 'BB_left' or 'BB_right'.
        name: dataset name put into samples.
        frame_ids: frame numbers (0-1499) to use in every sequence (None: all labelled).
            Every requested frame must have its image(s).
        wrist_fn: palm centre -> wrist conversion on canonical (..., 21, 3) joints.
        pixel_offset: added to the projected labels and principal point (see docstring).
        cache_dir: annotation cache folder (see `datasets.cache`).
    """

    def __init__(self, root: Path | str, sequences: Iterable[str], *, camera: str = "SK",
                 name: str = "stb", frame_ids: Iterable[int] | None = None,
                 wrist_fn: Callable[[np.ndarray], np.ndarray] = stb_palm_to_wrist,
                 pixel_offset: float = 0.0, cache_dir: CacheDir = None) -> None:
        root = Path(root)
        if camera not in CAMERA_VIEWS:
            raise ValueError(f"camera must be one of {sorted(CAMERA_VIEWS)}, got {camera!r}")
        sequences = tuple(sequences)
        unknown = [s for s in sequences if s not in SEQUENCES]
        if unknown:
            raise ValueError(f"unknown STB sequences {unknown}; known: {SEQUENCES}")
        if not root.is_dir():
            raise _layout_error(f"{root}: STB root folder not found")
        for sub in ("labels", "images"):
            if not (root / sub).is_dir():
                raise _layout_error(f"{root / sub}: STB folder not found")
        self.name = name
        self.root = root
        self.camera = camera
        wanted = None if frame_ids is None else sorted({int(f) for f in frame_ids})
        label_kind = "SK" if camera == "SK" else "BB"
        ids, keys, joints, Ks, images, masks = [], [], [], [], [], []
        for seq in sequences:
            label_path = root / "labels" / f"{seq}_{label_kind}.mat"
            if not label_path.is_file():
                raise _layout_error(f"{label_path}: STB label file not found")
            joints_mm = cached_arrays(label_path, PARSER_KIND,
                                      lambda p=label_path: parse_label_file(p),
                                      cache_dir)["joints_mm"]
            check_finite_joints(joints_mm, label_path)
            num = joints_mm.shape[0]
            frames = np.arange(num) if wanted is None else np.asarray(wanted, dtype=np.int64)
            if len(frames) and frames.max() >= num:
                raise AnnotationFormatError(f"{label_path}: has {num} frames, requested frame "
                                            f"{int(frames.max())}")
            canon = joints_mm[frames][:, list(STB_TO_CANONICAL)]
            for view in CAMERA_VIEWS[camera]:
                if view == "SK":
                    cam_mm, K = sk_depth_to_color(canon), SK_COLOR_K
                elif view == "BB_left":
                    cam_mm, K = canon, BB_K
                else:
                    cam_mm, K = bb_left_to_right(canon), BB_K
                joints.append(wrist_fn(cam_mm) / 1000.0)
                Ks.append(np.repeat(K[None], len(frames), axis=0))
                ids.append([encode_frame_id(seq, view, f) for f in frames])
                keys.append(SEQUENCES.index(seq) * 100000 + frames)
                seq_dir = root / "images" / seq
                images.append([seq_dir / IMAGE_PATTERNS[view].format(f) for f in frames])
                masks.append([seq_dir / MASK_PATTERN.format(f) if view == "SK" else None
                              for f in frames])
        self.frame_ids = np.asarray([i for part in ids for i in part], dtype=np.int64)
        self.split_keys = np.concatenate(keys).astype(np.int64) if keys else np.zeros(0, int)
        self._joints_m = (np.concatenate(joints) if joints
                          else np.zeros((0, NUM_JOINTS, 3)))
        K_all = np.concatenate(Ks) if Ks else np.zeros((0, 3, 3))
        K_all = K_all.copy()
        K_all[:, 0, 2] += pixel_offset
        K_all[:, 1, 2] += pixel_offset
        self._K = K_all
        self._kp2d = project_points(self._K, self._joints_m)
        self._images = [p for part in images for p in part]
        self._masks = [p if p is not None and p.is_file() else None
                       for part in masks for p in part]
        missing = [p for p in self._images if not p.is_file()]
        if missing:
            raise _layout_error(f"{missing[0]}: STB image not found ({len(missing)} of "
                                f"{len(self._images)} requested images missing); pass "
                                f"frame_ids= to read a subset")

    def __len__(self) -> int:
        return len(self.frame_ids)

    def record(self, index: int) -> FrameRecord:
        """Record ``index`` (one left hand, all joints visible)."""
        hand = HandAnnotation(side="left", kp2d_px=self._kp2d[index],
                              visible=np.ones(NUM_JOINTS, dtype=bool),
                              joints_m=self._joints_m[index])
        mask_path = self._masks[index]
        return FrameRecord(dataset=self.name, frame_id=int(self.frame_ids[index]),
                           image_path=self._images[index], K=self._K[index], hands=(hand,),
                           mask_path=mask_path, mask_is_binary=mask_path is not None)
