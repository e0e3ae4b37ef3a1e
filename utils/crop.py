"""Crop geometry: the affine maps between original and crop pixels, mirroring, warping.

Pixel convention (everywhere in the project): OpenCV's. Pixel centres sit at integer
coordinates, so an affine matrix maps keypoints exactly as ``cv2.warpAffine`` maps pixels,
and a horizontal flip of an image of width W maps ``u -> W - 1 - u``. Matrices are 3x3
homogeneous (or their top 2x3) acting on pixel coordinates; `datasets.transforms` composes
them into a sample's crop, `crop_to_original` puts predictions back into the original image.
"""

from __future__ import annotations

import cv2
import numpy as np


def flip_matrix(width: int) -> np.ndarray:
    """(3, 3) horizontal mirror ``u -> width - 1 - u`` of an image ``width`` pixels wide."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def flip_joints(joints: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points mirrored in the camera's y-z plane (x -> -x)."""
    out = np.array(joints, dtype=np.float64, copy=True)
    out[..., 0] *= -1.0
    return out


def flip_intrinsics(K: np.ndarray, width: int) -> np.ndarray:
    """Intrinsics seeing `flip_joints` points where `flip_matrix` puts the pixels."""
    out = np.array(K, dtype=np.float64, copy=True)
    out[0, 2] = width - 1.0 - K[0, 2]
    return out


def rotation_z(angle_rad: float) -> np.ndarray:
    """(3, 3) rotation about the camera's z axis (x towards y for positive angles)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def image_rotation_matrix(K: np.ndarray, angle_rad: float) -> np.ndarray:
    """(3, 3) image affine equal to rotating the scene by `rotation_z` (skew-free K)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    lin = np.array([[c, -s * fx / fy], [s * fy / fx, c]])
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = np.array([cx, cy]) - lin @ np.array([cx, cy])
    return out


def crop_matrix(center_px: np.ndarray, side_px: float, out_size: int) -> np.ndarray:
    """(3, 3) scale+shift mapping the square (centre, side) onto an ``out_size`` crop.

    The square's continuous extent ``centre +- side / 2`` maps onto the crop's pixel area
    ``[-0.5, out_size - 0.5]``, so its centre lands on ``(out_size - 1) / 2``.
    """
    if not side_px > 0:
        raise ValueError(f"crop side must be positive, got {side_px}")
    scale = out_size / side_px
    out = np.eye(3)
    out[0, 0] = out[1, 1] = scale
    out[:2, 2] = (out_size - 1) / 2.0 - scale * np.asarray(center_px, dtype=np.float64)
    return out


def resize_matrix(scale: float) -> np.ndarray:
    """(3, 3) affine of an image resized by ``scale`` (new side / old side), centre-aligned
    like `utils.geometry.rescale_px`: ``u' = (u + 0.5) * scale - 0.5``."""
    out = np.eye(3) * scale
    out[2, 2] = 1.0
    out[:2, 2] = 0.5 * scale - 0.5
    return out


def as_3x3(affine: np.ndarray) -> np.ndarray:
    """(..., 2, 3) or (..., 3, 3) affines as (..., 3, 3) float64."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape[-2:] == (3, 3):
        return affine
    if affine.shape[-2:] != (2, 3):
        raise ValueError(f"expected (..., 2, 3) or (..., 3, 3) affines, got {affine.shape}")
    last_row = np.broadcast_to([0.0, 0.0, 1.0], (*affine.shape[:-2], 1, 3))
    return np.concatenate([affine, last_row], axis=-2)


def apply_affine(affine: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """Map (..., 2) points with a (2, 3) or (3, 3) affine (float64 result)."""
    affine = np.asarray(affine, dtype=np.float64)
    points_px = np.asarray(points_px, dtype=np.float64)
    return points_px @ affine[:2, :2].T + affine[:2, 2]


def crop_to_original(kp2d_px: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map crop-pixel keypoints back to the original image with the sample's affine.

    Args:
        kp2d_px: (..., J, 2) keypoints in crop pixels (e.g. decoded predictions).
        affine: (..., 2, 3) or (..., 3, 3) original -> crop affine of the sample (the batch's
            ``affine``; it includes the left->right flip, so the result is in the unflipped
            original image).

    Returns:
        (..., J, 2) float64 keypoints in original-image pixels.
    """
    affine = np.asarray(affine, dtype=np.float64)
    kp2d_px = np.asarray(kp2d_px, dtype=np.float64)
    lin = affine[..., :2, :2]
    shift = affine[..., :2, 2]
    inv = np.linalg.inv(lin)
    return np.einsum("...ij,...nj->...ni", inv, kp2d_px - shift[..., None, :])


def keypoint_box(kp2d_px: np.ndarray, joints_m: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Min and max corner (2,) of the keypoints usable for framing.

    Joints behind the camera (z <= 0, which RHD has) and non-finite points are ignored;
    raises if nothing is left.
    """
    usable = np.isfinite(kp2d_px).all(axis=1)
    if joints_m is not None:
        usable &= joints_m[:, 2] > 0
    if not usable.any():
        raise ValueError("no keypoint in front of the camera to frame the crop")
    pts = kp2d_px[usable]
    return pts.min(axis=0), pts.max(axis=0)


def warp_image(image: np.ndarray, affine: np.ndarray, out_size: int) -> np.ndarray:
    """Bilinear warp of an (H, W[, C]) image into an ``out_size`` square (zero border)."""
    return cv2.warpAffine(image, np.asarray(affine[:2], dtype=np.float64), (out_size, out_size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_mask(mask: np.ndarray, affine: np.ndarray, crop_size: int, mask_size: int) -> np.ndarray:
    """Nearest-neighbour warp of an (H, W) mask to the ``mask_size`` grid of the crop.

    The mask grid is centre-aligned with the crop like the heatmaps
    (``m = (u_crop + 0.5) * mask_size / crop_size - 0.5``).
    """
    s = mask_size / crop_size
    to_grid = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]])
    full = to_grid @ np.vstack([np.asarray(affine, dtype=np.float64)[:2], [0.0, 0.0, 1.0]])
    return cv2.warpAffine(mask, full[:2], (mask_size, mask_size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
