"""Backends whose outputs the tests control, for the Predictor and the localisation logic.

`RedSquareBackend` "sees" hands as red regions of its input: the mask is the red area, the 21
keypoints span the box of the red area nearest the crop centre, the heatmap peaks are 1 where
a crop shows red and 0 where it does not, and the log-likelihood (when enabled) is larger the
more red sits in the left half of the crop than in the right half, so a crop and its mirror
score differently.
"""

from __future__ import annotations

import cv2
import numpy as np

from models import ModelConfig
from models.runtime import RawOutput
from utils.heatmap import HeatmapCodec
from utils.predictor import Predictor

# 21 keypoints as fractions of the red box: its four corners first, the rest inside.
_FRACTIONS = np.concatenate([
    np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
    np.random.default_rng(0).uniform(0.1, 0.9, size=(17, 2)),
])  # fmt: skip


def red_pixels(images: np.ndarray) -> np.ndarray:
    """(B, S, S) bool: the red pixels of (B, 3, S, S) crops in [0, 1]."""
    return (images[:, 0] > 0.5) & (images[:, 1] < 0.3) & (images[:, 2] < 0.3)


class RedSquareBackend:
    """See the module docstring."""

    name = "fake"

    def __init__(self, cfg: ModelConfig, has_flow: bool = False) -> None:
        self.cfg = cfg
        self.has_flow = has_flow
        self.has_residual = False
        self.codec = HeatmapCodec(cfg.input_size, cfg.heatmap_size)
        self.calls: list[int] = []  # batch size of each call

    def __call__(self, images: np.ndarray) -> RawOutput:
        self.calls.append(len(images))
        red = red_pixels(images)
        b, size = red.shape[0], self.cfg.input_size
        grid = self.cfg.heatmap_size
        stride = size // grid
        frac = red.reshape(b, grid, stride, grid, stride).mean(axis=(2, 4))
        mask_logits = (10.0 * (frac - 0.5))[:, None].astype(np.float32)
        heatmaps = np.zeros((b, 21, grid, grid), np.float32)
        for i in range(b):
            # The hand nearest the crop centre (a crop of one hand can show part of another).
            count, labels = cv2.connectedComponents(red[i].astype(np.uint8), connectivity=8)
            if count < 2:
                continue
            centre = (size - 1) / 2.0
            nearest = min(range(1, count), key=lambda k: np.hypot(
                *(np.argwhere(labels == k).mean(axis=0) - centre)))
            vs, us = np.nonzero(labels == nearest)
            lo = np.array([us.min(), vs.min()], np.float64)
            hi = np.array([us.max(), vs.max()], np.float64)
            heatmaps[i] = self.codec.encode(lo + _FRACTIONS * (hi - lo))[0]
        half = size // 2
        loglik = None
        if self.has_flow:
            loglik = (100.0 * (red[:, :, :half].mean(axis=(1, 2))
                               - red[:, :, half:].mean(axis=(1, 2)))).astype(np.float32)
        return RawOutput(heatmaps=heatmaps, mask_logits=mask_logits, log_likelihood=loglik,
                         loglik_map=None if loglik is None else np.zeros((b, 2, 2), np.float32))


def red_square_predictor(has_flow: bool = False, **kwargs) -> Predictor:
    """A Predictor of the small preset's sizes (128 input, 32 heatmaps) on RedSquareBackend."""
    cfg = ModelConfig.preset("small")
    return Predictor(RedSquareBackend(cfg, has_flow=has_flow), cfg, **kwargs)


def image_with_squares(boxes_xywh: list[tuple[int, int, int, int]], width: int = 320,
                       height: int = 240, seed: int = 0) -> np.ndarray:  # fmt: skip
    """A grey noise image (H, W, 3) uint8 with a red rectangle per box."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    for x, y, w, h in boxes_xywh:
        image[y:y + h, x:x + w] = (220, 20, 20)
    return image
