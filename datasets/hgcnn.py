"""Reader of hand-graph-cnn's real-world test set (Ge et al., CVPR 2019) in its original format.

Layout (``root`` = ``real_world_testset``):

    images/00000.jpg ...   256x256 crops of about 1280x720 photos
    params.mat             bbox (N, 4) [x, y, w, h] of each crop in its photo (w == h),
                           cam_param (N, 4) [fx, fy, u0, v0] of the photo's camera
    pose_gt.mat            pose_gt (N, 21, 3) camera-frame joints, centimetres, in
                           MediaPipe's order (= the project's canonical order)

The crop's intrinsics follow from the box: with ``r = 256 / w``, ``fx' = fx r``,
``fy' = fy r``, ``u0' = (u0 - x) r``, ``v0' = (v0 - y) r``, and the 2D labels are the
pinhole projection of the joints with them. Every hand is a left hand (palm towards the
camera, thumb on the image's left). All joints count as visible (the set has no flags).

Frame ids are the row numbers (the image file name). Annotated rows whose image is missing
(the partial copy in ../shared/realdata holds 389 of 583 images) are left out with one
warning that counts them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from datasets.base import FrameRecord, HandAnnotation
from utils.geometry import project_points
from utils.image_io import AnnotationFormatError, DatasetLayoutError, read_mat
from utils.joints import NUM_JOINTS

CROP_SIZE = 256
LAYOUT = (
    "  <root>/images/%05d.jpg   256x256 crops\n"
    "  <root>/params.mat        'bbox' (N, 4) [x, y, w, h], 'cam_param' (N, 4) [fx, fy, u0, v0]\n"
    "  <root>/pose_gt.mat       'pose_gt' (N, 21, 3) joints in centimetres"
)


def crop_intrinsics(bbox_xywh: np.ndarray, cam_param: np.ndarray) -> np.ndarray:
    """(N, 3, 3) intrinsics of the 256x256 crops from their boxes and the photo cameras."""
    x, y, w = bbox_xywh[:, 0], bbox_xywh[:, 1], bbox_xywh[:, 2]
    r = CROP_SIZE / w
    K = np.zeros((len(w), 3, 3))
    K[:, 0, 0] = cam_param[:, 0] * r
    K[:, 1, 1] = cam_param[:, 1] * r
    K[:, 0, 2] = (cam_param[:, 2] - x) * r
    K[:, 1, 2] = (cam_param[:, 3] - y) * r
    K[:, 2, 2] = 1.0
    return K


class HGCNNRealReader:
    """The real-world test set's annotated rows whose images are present.

    Args:
        root: the ``real_world_testset`` folder.
        name: dataset name put into samples.
        frame_ids: only these rows (None: every row with an image).
    """

    def __init__(self, root: Path | str, *, name: str = "hgcnn_real",
                 frame_ids: Iterable[int] | None = None) -> None:
        root = Path(root)
        self.name = name
        self.root = root
        for needed in (root, root / "images", root / "params.mat", root / "pose_gt.mat"):
            if not needed.exists():
                raise DatasetLayoutError(f"{needed}: not found.\nExpected layout:\n{LAYOUT}")
        params = read_mat(root / "params.mat", LAYOUT)
        pose = read_mat(root / "pose_gt.mat", LAYOUT)
        try:
            bbox = np.asarray(params["bbox"], dtype=np.float64).reshape(-1, 4)
            cam = np.asarray(params["cam_param"], dtype=np.float64).reshape(-1, 4)
            joints_m = np.asarray(pose["pose_gt"], dtype=np.float64) / 100.0
        except (KeyError, ValueError) as e:
            raise AnnotationFormatError(f"{root}: params.mat / pose_gt.mat do not hold the "
                                        f"expected arrays ({e})\nExpected layout:\n{LAYOUT}") from e
        n = len(bbox)
        if joints_m.shape != (n, NUM_JOINTS, 3) or cam.shape != (n, 4):
            raise AnnotationFormatError(
                f"{root}: expected pose_gt (N, {NUM_JOINTS}, 3) and cam_param (N, 4) for N = "
                f"{n} boxes, got {joints_m.shape} and {cam.shape}\nExpected layout:\n{LAYOUT}")
        for field, values in (("bbox", bbox), ("cam_param", cam), ("pose_gt", joints_m)):
            bad = np.flatnonzero(~np.isfinite(values.reshape(n, -1)).all(axis=1))
            if len(bad):
                raise AnnotationFormatError(f"{root}: non-finite {field} in rows "
                                            f"{bad[:5].tolist()}")
        if (bbox[:, 2] <= 0).any() or (joints_m[..., 2] <= 0).any():
            raise AnnotationFormatError(f"{root}: boxes need w > 0 and joints z > 0")
        present = {p.name for p in (root / "images").iterdir()}
        rows = np.arange(n) if frame_ids is None else np.asarray(sorted(set(frame_ids)))
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise AnnotationFormatError(f"{root}: frame ids must be in [0, {n}), got "
                                        f"{rows.min()}..{rows.max()}")
        has_image = np.array([f"{r:05d}.jpg" in present for r in rows], dtype=bool)
        if frame_ids is not None and not has_image.all():
            missing = rows[~has_image]
            raise DatasetLayoutError(f"{root / 'images'}: {len(missing)} requested frames have "
                                     f"no image, first {missing[:5].tolist()}")
        if not has_image.all():
            warnings.warn(f"{root}: {int((~has_image).sum())} of {len(rows)} annotated frames "
                          f"have no image in {root / 'images'}; reading the "
                          f"{int(has_image.sum())} present", UserWarning, stacklevel=2)
        self.frame_ids = rows[has_image]
        self._K = crop_intrinsics(bbox, cam)[self.frame_ids]
        self._joints_m = joints_m[self.frame_ids]
        self.split_keys = self.frame_ids.astype(np.int64)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def record(self, index: int) -> FrameRecord:
        """Record ``index``: one left hand, all joints visible."""
        frame = int(self.frame_ids[index])
        K = self._K[index]
        joints = self._joints_m[index]
        hand = HandAnnotation(side="left", kp2d_px=project_points(K, joints),
                              visible=np.ones(NUM_JOINTS, dtype=bool), joints_m=joints)
        return FrameRecord(dataset=self.name, frame_id=frame,
                           image_path=self.root / "images" / f"{frame:05d}.jpg", K=K,
                           hands=(hand,))
