"""Camera geometry as pure numpy functions (torch versions live next to their users)."""

from __future__ import annotations

import numpy as np


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
