"""Camera and pixel geometry as pure functions (numpy; torch versions live next to their
users, except `rescale_px`, which takes both)."""

from __future__ import annotations

import numpy as np
import torch


def rescale_px(px: np.ndarray | torch.Tensor, scale: float) -> np.ndarray | torch.Tensor:
    """Pixel coordinates on a grid resized by ``scale``, centre-aligned:
    ``u' = (u + 0.5) * scale - 0.5`` (OpenCV's convention: pixel centres at integers, so the
    continuous extent ``[-0.5, n - 0.5]`` maps onto ``[-0.5, n * scale - 0.5]``).

    Args:
        px: (..., 2) coordinates (or any shape of single coordinates); arrays are computed
            in float64, tensors keep their device and dtype.
        scale: new side / old side.
    """
    if isinstance(px, torch.Tensor):
        return (px + 0.5) * scale - 0.5
    return (np.asarray(px, dtype=np.float64) + 0.5) * scale - 0.5


def project_points(K: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-frame points.

    Args:
        K: (..., 3, 3) intrinsics; broadcasts against the points' leading dims.
        xyz: (..., N, 3) points in the camera frame (any unit; z > 0 in front).

    Returns:
        (..., N, 2) pixel coordinates ``(K @ xyz)[:2] / z``.
    """
    uvw = np.einsum("...ij,...nj->...ni", K, xyz)
    return uvw[..., :2] / uvw[..., 2:3]


def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) of the axis-angle vector ``rvec`` (3,) in radians."""
    rvec = np.asarray(rvec, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(rvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rvec / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The (3, 3) float64 intrinsic matrix."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
