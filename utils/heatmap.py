"""Gaussian heatmap targets and their sub-pixel decoding (one batched torch implementation,
with a numpy front end).

One codec object is shared by the data pipeline (targets), the evaluator (decoding) and the
visualiser, so that all three agree on the geometry:

* Pixel convention: OpenCV's, in both spaces (pixel centres at integer coordinates).
* Crop pixels and heatmap pixels are centre-aligned: with ``stride = input_size /
  heatmap_size``, ``kp_hm = (kp_crop + 0.5) / stride - 0.5`` (`crop_to_heatmap`,
  `utils.geometry.rescale_px`).
* A model's heatmaps are always a quarter of its input side (`HEATMAP_STRIDE`), so a model's
  codec is built from its config alone: `HeatmapCodec.for_model(cfg, sigma=...)`.
* A target is an unnormalised Gaussian ``exp(-|x - mu|^2 / (2 sigma^2))`` with a sub-pixel
  centre ``mu`` (no rounding), so its peak value is at most 1.
* Decoding takes the arg-max and refines it with one Newton step on the log-heatmap
  (DARK, Zhang et al. CVPR 2020): for an exact Gaussian target ``log h`` is quadratic and
  the step recovers ``mu`` exactly, also for peaks on the heatmap border (the 3x3 stencil
  moves inwards). When the local Hessian is not negative definite or the step leaves the
  arg-max's pixel neighbourhood (flat or noisy maps), it falls back to the classic
  quarter-pixel shift towards the larger neighbour.

Supervision weights: by default (BiHand) a joint gets weight 0 only when its Gaussian falls
off the heatmap (its 3-sigma disc touches no heatmap pixel) or its position is not finite;
``zero_invisible=True`` also gives weight 0 to joints marked invisible (MMPose's choice).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from utils.geometry import rescale_px

_LOG_EPS = 1e-10  # floor before the log so that zero-valued pixels stay finite
# Heatmaps are always a quarter of the input side (stride-2 stem conv + one 2x2 max-pool).
HEATMAP_STRIDE = 4


class _HasInputSize(Protocol):
    input_size: int


class HeatmapCodec:
    """Encode keypoints in crop pixels to Gaussian heatmaps and decode them back.

    Args:
        input_size: side of the square input crop, pixels.
        heatmap_size: side of the square heatmaps, pixels.
        sigma: Gaussian standard deviation in heatmap pixels.
        zero_invisible: also give weight 0 to joints whose ``visible`` flag is False.
    """

    def __init__(self, input_size: int = 256, heatmap_size: int = 64, sigma: float = 2.0,
                 zero_invisible: bool = False) -> None:
        if input_size <= 0 or heatmap_size <= 0:
            raise ValueError(f"sizes must be positive, got input_size={input_size}, "
                             f"heatmap_size={heatmap_size}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.input_size = int(input_size)
        self.heatmap_size = int(heatmap_size)
        self.sigma = float(sigma)
        self.zero_invisible = bool(zero_invisible)
        self.stride = self.input_size / self.heatmap_size

    @classmethod
    def for_input_size(cls, input_size: int, *, sigma: float = 2.0,
                       zero_invisible: bool = False) -> HeatmapCodec:  # fmt: skip
        """The codec of a model taking ``input_size`` crops (heatmaps of a quarter side)."""
        if input_size % HEATMAP_STRIDE:
            raise ValueError(f"input_size must be divisible by {HEATMAP_STRIDE}, got {input_size}")
        return cls(input_size, input_size // HEATMAP_STRIDE, sigma, zero_invisible=zero_invisible)

    @classmethod
    def for_model(cls, cfg: _HasInputSize, *, sigma: float = 2.0,
                  zero_invisible: bool = False) -> HeatmapCodec:  # fmt: skip
        """The codec of a model config (`models.ModelConfig`: its ``input_size``); ``sigma``
        and ``zero_invisible`` only matter for encoding (training targets)."""
        return cls.for_input_size(cfg.input_size, sigma=sigma, zero_invisible=zero_invisible)

    def __repr__(self) -> str:
        return (f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"sigma={self.sigma}, zero_invisible={self.zero_invisible})")

    # --- coordinate maps ---------------------------------------------------------------

    def crop_to_heatmap(self, kp_crop_px: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixels -> heatmap pixels (centre-aligned)."""
        return rescale_px(kp_crop_px, 1.0 / self.stride)

    def heatmap_to_crop(self, kp_hm: np.ndarray) -> np.ndarray:
        """(..., 2) heatmap pixels -> crop pixels (inverse of `crop_to_heatmap`)."""
        return rescale_px(kp_hm, self.stride)

    # --- encode ----------------------------------------------------------------------------

    def encode(self, kp2d_px: np.ndarray, visible: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian targets for one hand.

        Args:
            kp2d_px: (J, 2) keypoints in crop pixels (floats; NaN/inf allowed: weight 0).
            visible: (J,) bool visibility, or None for all visible.

        Returns:
            heatmaps: (J, H, W) float32, zero for joints of weight 0.
            weights: (J,) float32 in {0, 1}.
        """
        kp2d_px = np.asarray(kp2d_px, dtype=np.float64)
        if kp2d_px.ndim != 2 or kp2d_px.shape[1] != 2:
            raise ValueError(f"kp2d_px must have shape (J, 2), got {kp2d_px.shape}")
        num_joints = kp2d_px.shape[0]
        if visible is not None:
            visible = np.asarray(visible, dtype=bool)
            if visible.shape != (num_joints,):
                raise ValueError(f"visible must have shape ({num_joints},), got {visible.shape}")
        size = self.heatmap_size
        mu = self.crop_to_heatmap(kp2d_px)  # (J, 2)
        reach = 3.0 * self.sigma
        finite = np.isfinite(mu).all(axis=1)
        mu = np.where(finite[:, None], mu, 0.0)
        # The 3-sigma disc must overlap the pixel area [-0.5, size - 0.5] in both axes.
        on_map = ((mu + reach > -0.5) & (mu - reach < size - 0.5)).all(axis=1)
        weights = finite & on_map
        if self.zero_invisible and visible is not None:
            weights &= visible
        grid = np.arange(size, dtype=np.float64)
        # Separable Gaussian: outer product of the 1-D profiles per joint (zero rows for
        # joints of weight 0), exponent in float64, the product in float32.
        gx = np.exp(-((grid[None, :] - mu[:, 0:1]) ** 2) / (2.0 * self.sigma**2))  # (J, W)
        gy = np.exp(-((grid[None, :] - mu[:, 1:2]) ** 2) / (2.0 * self.sigma**2))  # (J, H)
        gy *= weights[:, None]
        heatmaps = gy.astype(np.float32)[:, :, None] * gx.astype(np.float32)[:, None, :]
        return heatmaps, weights.astype(np.float32)

    # --- decode ---------------------------------------------------------------------------

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sub-pixel keypoints from heatmaps (numpy front end of `decode_torch`, in float64).

        Args:
            heatmaps: (..., J, H, W) array.

        Returns:
            kp2d_px: (..., J, 2) float64 keypoints in crop pixels.
            scores: (..., J) float64 heatmap maxima.
        """
        heatmaps = np.asarray(heatmaps, dtype=np.float64)
        if heatmaps.ndim < 3:
            raise ValueError(f"heatmaps must have shape (..., J, H, W), got {heatmaps.shape}")
        *lead, height, width = heatmaps.shape
        flat = torch.from_numpy(np.ascontiguousarray(heatmaps)).reshape(1, -1, height, width)
        kp, scores = self.decode_torch(flat)
        return kp.numpy().reshape(*lead, 2), scores.numpy().reshape(*lead)

    def decode_torch(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched sub-pixel decoding: arg-max refined by DARK (see the module docstring);
        device and dtype from the input.

        Args:
            heatmaps: (B, J, H, W) tensor (any float dtype; computed in at least float32).

        Returns:
            kp2d_px: (B, J, 2) keypoints in crop pixels.
            scores: (B, J) heatmap maxima.
        """
        if heatmaps.ndim != 4:
            raise ValueError(f"heatmaps must have shape (B, J, H, W), got {tuple(heatmaps.shape)}")
        hm = heatmaps.detach()
        if hm.dtype not in (torch.float32, torch.float64):
            hm = hm.float()
        b, j, height, width = hm.shape
        flat = hm.reshape(b * j, height, width)
        scores, idx = flat.reshape(b * j, -1).max(dim=1)
        ys = torch.div(idx, width, rounding_mode="floor")
        xs = idx - ys * width
        pixels = flat.reshape(b * j, -1)

        # The 3x3 stencil is centred at the arg-max moved one pixel inwards at the border, so
        # a peak on the edge is refined too (one Newton step is exact for a log-quadratic map
        # from any stencil centre). A step further than one pixel from the arg-max is rejected.
        cy = ys.clamp(1, max(height - 2, 1))
        cx = xs.clamp(1, max(width - 2, 1))
        # One gather for the 3x3 stencil (log of its 9 values only) and one for the 4
        # neighbours of the arg-max: a few ops instead of one per pixel read.
        step = torch.arange(-1, 2, device=hm.device)
        sy = (cy[:, None, None] + step[None, :, None]).clamp(0, height - 1)  # (N, 3, 1)
        sx = (cx[:, None, None] + step[None, None, :]).clamp(0, width - 1)  # (N, 1, 3)
        stencil = torch.log(pixels.gather(1, (sy * width + sx).reshape(-1, 9))
                            .clamp_min(_LOG_EPS)).reshape(-1, 3, 3)  # fmt: skip
        ny = torch.stack([ys, ys, ys - 1, ys + 1], dim=1).clamp(0, height - 1)
        nx = torch.stack([xs - 1, xs + 1, xs, xs], dim=1).clamp(0, width - 1)
        near = pixels.gather(1, ny * width + nx)  # left, right, up, down of the arg-max

        def at(dy: int, dx: int) -> torch.Tensor:
            return stencil[:, dy + 1, dx + 1]

        def around(dy: int, dx: int) -> torch.Tensor:
            return near[:, {(0, -1): 0, (0, 1): 1, (-1, 0): 2, (1, 0): 3}[(dy, dx)]]

        c = at(0, 0)
        dx = 0.5 * (at(0, 1) - at(0, -1))
        dy = 0.5 * (at(1, 0) - at(-1, 0))
        dxx = at(0, 1) - 2 * c + at(0, -1)
        dyy = at(1, 0) - 2 * c + at(-1, 0)
        dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = dxx * dyy - dxy * dxy
        newton_ok = (dxx < 0) & (det > 1e-12) & (height >= 3) & (width >= 3)
        safe_det = torch.where(newton_ok, det, torch.ones_like(det))
        ox = (cx - xs).to(det.dtype) - (dyy * dx - dxy * dy) / safe_det
        oy = (cy - ys).to(det.dtype) - (dxx * dy - dxy * dx) / safe_det
        newton_ok = newton_ok & (ox.abs() <= 1) & (oy.abs() <= 1)
        # Fallback: a quarter pixel towards the larger neighbour, on axes with both neighbours.
        interior_x = ((xs >= 1) & (xs <= width - 2)).to(det.dtype)
        interior_y = ((ys >= 1) & (ys <= height - 2)).to(det.dtype)
        qx = 0.25 * torch.sign(around(0, 1) - around(0, -1)) * interior_x
        qy = 0.25 * torch.sign(around(1, 0) - around(-1, 0)) * interior_y
        ox = torch.where(newton_ok, ox, qx)
        oy = torch.where(newton_ok, oy, qy)
        kp_hm = torch.stack([xs.to(ox.dtype) + ox, ys.to(oy.dtype) + oy], dim=1)
        kp = rescale_px(kp_hm, self.stride)
        return kp.reshape(b, j, 2), scores.reshape(b, j)
