"""Test-time views: each hand crop also read zoomed and rotated, the keypoints merged.

A view ``(scale, rotation)`` frames the same hand with a crop ``scale`` times as wide
(``scale > 1`` zooms out) turned by ``rotation`` degrees about the crop's centre. Every view
is decoded to original-image pixels through its own affine, and the keypoints of all views
are merged by the coordinate-wise median (robust to one view that misreads a joint). The
views are the product ``scales x rotations``; the plain view (1, 0) is always one of them and
comes first: its heatmap peaks, mask, flow, probes and heads give every score a hand
reports, so a score means the same with and without views. Only the keypoints change, and
a side left to the model is decided on the side score's mean over the views.

Two ways to make a view's input, the same up to bilinear resampling:

* from the original image (`Predictor.view_predictions`: `Predictor.predict`, and the hand
  finder's chosen hands): the view's affine applied to the image, so a zoomed-out view sees
  the real surroundings;
* from a prepared crop (`Predictor.run_crops`, the evaluator's batches): the crop warped
  on the device by `warp_crops`; a zoomed-out or turned view is padded with black where the
  crop ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# The views `--tta` reads when no scales or rotations are given (chosen on the validation
# splits, see the README's *Test-time views*).
DEFAULT_SCALES = (1.0, 0.85, 1.15)
DEFAULT_ROTATIONS_DEG = (0.0, -20.0, 20.0)


class ViewsError(ValueError):
    """Views that cannot be read (a scale <= 0, a value that is not finite)."""


@dataclass(frozen=True)
class TestTimeViews:
    """The views of each crop: every scale with every rotation.

    Attributes:
        scales: crop side multipliers (> 0; 1 is added when missing).
        rotations_deg: rotations in degrees (0 is added when missing).
    """

    __test__ = False  # not a pytest test class, despite its name

    scales: tuple[float, ...] = DEFAULT_SCALES
    rotations_deg: tuple[float, ...] = DEFAULT_ROTATIONS_DEG

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in self.scales)
        rotations = tuple(float(r) for r in self.rotations_deg)
        if not all(math.isfinite(s) and s > 0 for s in scales):
            raise ViewsError(f"view scales must be finite numbers > 0, got {list(scales)}")
        if not all(math.isfinite(r) for r in rotations):
            raise ViewsError(f"view rotations must be finite, got {list(rotations)}")
        object.__setattr__(self, "scales", _plain_first(scales, 1.0))
        object.__setattr__(self, "rotations_deg", _plain_first(rotations, 0.0))

    @property
    def views(self) -> list[tuple[float, float]]:
        """(scale, rotation_deg) of every view; the plain view (1, 0) first."""
        return [(s, r) for s in self.scales for r in self.rotations_deg]

    def __len__(self) -> int:
        return len(self.scales) * len(self.rotations_deg)

    def matrices(self, size: int) -> np.ndarray:
        """(V, 3, 3) model-input pixels -> each view's input pixels (a ``size`` square)."""
        return np.stack([view_matrix(s, r, size) for s, r in self.views])

    def to_dict(self) -> dict[str, list[float]]:
        return {"scales": list(self.scales), "rotations_deg": list(self.rotations_deg)}


def _plain_first(values: tuple[float, ...], plain: float) -> tuple[float, ...]:
    """``values`` without repeats, ``plain`` first."""
    rest = [v for v in dict.fromkeys(values) if v != plain]
    return (plain, *rest)


def view_matrix(scale: float, rotation_deg: float, size: int) -> np.ndarray:
    """(3, 3) the crop's pixels -> the view's: about the centre ``(size - 1) / 2``, zoom by
    ``1 / scale`` and turn by ``rotation_deg`` (counter-clockwise on screen for > 0)."""
    c = (size - 1) / 2.0
    t = math.radians(rotation_deg)
    lin = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) / scale
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = c - lin @ np.array([c, c])
    return out


def warp_crops(crops: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """(B, C, S, S) crops seen through one view (`view_matrix`), bilinear, black outside.

    ``grid_sample`` with ``align_corners=False`` puts pixel ``u`` at ``(2u + 1) / S - 1``, the
    project's pixel-centre convention (`utils.crop`).
    """
    size = crops.shape[-1]
    to_unit = np.array([[2.0 / size, 0.0, 1.0 / size - 1.0],
                        [0.0, 2.0 / size, 1.0 / size - 1.0], [0.0, 0.0, 1.0]])  # fmt: skip
    # For each output (view) pixel, where to read in the crop: the inverse map, in [-1, 1].
    theta = to_unit @ np.linalg.inv(matrix) @ np.linalg.inv(to_unit)
    theta_t = torch.as_tensor(theta[:2], dtype=crops.dtype, device=crops.device)
    grid = F.affine_grid(theta_t.expand(crops.shape[0], 2, 3), list(crops.shape),
                         align_corners=False)  # fmt: skip
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def merge_keypoints(kp2d_px: Sequence[np.ndarray]) -> np.ndarray:
    """(V, B, J, 2) keypoints of V views in original pixels -> (B, J, 2) coordinate-wise
    median."""
    return np.median(np.stack(kp2d_px), axis=0)
