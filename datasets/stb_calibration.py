"""STB's camera calibration (from the dataset's README), shared by reader and generator.

Labels of the SK (Intel SR300) sequences are in the depth camera's frame; labels of the BB
(Bumblebee stereo) sequences are in the left camera's frame. All lengths in millimetres.
"""

from __future__ import annotations

import numpy as np

from utils.geometry import intrinsics, rodrigues

SK_COLOR_K = intrinsics(607.92271, 607.88192, 314.78337, 236.42484)
# (R(r), t) take colour-camera coordinates to depth-camera ones: X_d = R X_c + t.
SK_DEPTH_FROM_COLOR_RVEC = np.array([0.00531, -0.01196, 0.00301])
SK_DEPTH_FROM_COLOR_T_MM = np.array([-24.0381, -0.4563, -1.2326])

BB_K = intrinsics(822.79041, 822.79041, 318.47345, 250.31296)
BB_BASELINE_MM = 120.054  # the right camera sees the left camera's points at x - baseline

IMAGE_SIZE_WH = (640, 480)


def sk_depth_to_color(xyz_depth_mm: np.ndarray) -> np.ndarray:
    """(..., 3) SK depth-camera points -> colour-camera points: R^T (X_d - t)."""
    R = rodrigues(SK_DEPTH_FROM_COLOR_RVEC)
    return (xyz_depth_mm - SK_DEPTH_FROM_COLOR_T_MM) @ R


def sk_color_to_depth(xyz_color_mm: np.ndarray) -> np.ndarray:
    """(..., 3) SK colour-camera points -> depth-camera points: R X_c + t."""
    R = rodrigues(SK_DEPTH_FROM_COLOR_RVEC)
    return xyz_color_mm @ R.T + SK_DEPTH_FROM_COLOR_T_MM


def bb_left_to_right(xyz_left_mm: np.ndarray) -> np.ndarray:
    """(..., 3) Bumblebee left-camera points -> right-camera points."""
    return xyz_left_mm - np.array([BB_BASELINE_MM, 0.0, 0.0])
