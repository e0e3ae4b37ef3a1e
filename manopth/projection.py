"""Camera projections and the 2D keypoint loss used to supervise MANO in 2D.

The same functions serve the fitting routine (`manopth.fit`) and a network head that
predicts MANO parameters and is trained from 2D keypoints.
"""

from __future__ import annotations

import torch
from torch import Tensor


def perspective_project(points_m: Tensor, K: Tensor, min_depth_m: float = 1e-4) -> Tensor:
    """Pinhole projection with per-sample intrinsics.

    Args:
        points_m: (B, N, 3) camera-frame points (z forward, metres).
        K: (B, 3, 3) or (3, 3) intrinsics in pixels.
        min_depth_m: depths are clamped to at least this, so points at or behind the
            camera give large but finite pixels and gradients (fitting can recover).

    Returns:
        (B, N, 2) pixel coordinates.
    """
    if points_m.ndim != 3 or points_m.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points_m.shape)}")
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (B, 3, 3) or (3, 3), got {tuple(K.shape)}")
    K = K.to(points_m.dtype).expand(points_m.shape[0], 3, 3)
    uvw = torch.einsum("bij,bnj->bni", K, points_m)
    depth = uvw[..., 2:].clamp(min=min_depth_m)
    return uvw[..., :2] / depth


def weak_perspective_project(points_m: Tensor, scale: Tensor, trans_xy: Tensor) -> Tensor:
    """Scaled orthographic projection ``scale * xy + trans_xy``.

    Args:
        points_m: (B, N, 3) points.
        scale: (B,) or (B, 1) scale (pixels per metre, or normalised units).
        trans_xy: (B, 2) offset in the output units.

    Returns:
        (B, N, 2) projected points.
    """
    scale = scale.reshape(-1, 1, 1)
    return scale * points_m[..., :2] + trans_xy[:, None, :]


def keypoint_reprojection_loss(
    kp2d_pred: Tensor,
    kp2d_target: Tensor,
    weights: Tensor | None = None,
    robust_sigma_px: float | None = None,
) -> Tensor:
    """Per-sample weighted mean of squared 2D keypoint errors (optionally robust).

    Args:
        kp2d_pred: (B, J, 2) predicted keypoints (pixels).
        kp2d_target: (B, J, 2) targets.
        weights: (B, J) per-keypoint weights (0 ignores a keypoint); default all ones.
        robust_sigma_px: if given, the Geman-McClure penalty
            ``sigma^2 * e^2 / (sigma^2 + e^2)`` replaces ``e^2`` so outliers saturate.

    Returns:
        (B,) loss in squared pixels (weighted mean over keypoints).
    """
    sq = ((kp2d_pred - kp2d_target) ** 2).sum(-1)  # (B, J)
    if robust_sigma_px is not None:
        s2 = robust_sigma_px**2
        sq = s2 * sq / (s2 + sq)
    if weights is None:
        weights = torch.ones_like(sq)
    weights = weights.to(sq.dtype)
    return (weights * sq).sum(-1) / weights.sum(-1).clamp(min=1e-8)


def reprojection_error_px(kp2d_pred: Tensor, kp2d_target: Tensor,
                          weights: Tensor | None = None) -> Tensor:
    """(B,) weighted mean Euclidean 2D error in pixels."""
    err = (kp2d_pred - kp2d_target).norm(dim=-1)
    if weights is None:
        weights = torch.ones_like(err)
    weights = weights.to(err.dtype)
    return (weights * err).sum(-1) / weights.sum(-1).clamp(min=1e-8)
