"""A sample's crop (composed of `utils.crop`'s maps), its augmentation draws and photometric
augmentation, as pure functions.

Pixel convention: OpenCV's (see `utils.crop`).

The crop of a sample is ONE affine warp of the original image, composed of three steps
(all 3x3 homogeneous matrices acting on original pixel coordinates):

1. ``F``: the mirror ``u -> W - 1 - u`` when a left hand is turned into a right hand. The
   camera stays a pinhole camera: 3D joints get ``x -> -x`` and ``cx -> W - 1 - cx``.
2. ``R``: a rotation of the image about the principal point, equal to rotating the 3D
   joints about the camera's z axis by the same angle (``S Rot S^-1`` with ``S = diag(fx,
   fy)``, exact for any pinhole camera without skew). K is unchanged by this step.
3. ``C``: scale + translation to the ``out_size`` crop around the (rotated) keypoint box:
   side ``factor * max(box w, box h)`` (times a scale jitter), the box's centre (plus a
   centre jitter). The crop intrinsics are ``K' = C K``.

``affine = C R F`` maps original pixels to crop pixels, and ``project_points(K', joints_m)``
with the rotated (and mirrored) joints equals the crop keypoints. `crop_to_original`
inverts the affine to put predictions back into the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from utils.crop import (
    apply_affine,
    crop_matrix,
    flip_intrinsics,
    flip_joints,
    flip_matrix,
    image_rotation_matrix,
    keypoint_box,
    rotation_z,
)


@dataclass(frozen=True)
class CropConfig:
    """How the crop is framed (no randomness here).

    Attributes:
        out_size: side of the square crop, pixels.
        factor: crop side = factor x max(width, height) of the keypoint box (BiHand: 2).
    """

    out_size: int = 256
    factor: float = 2.0


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation ranges (all uniform draws from a per-sample generator).

    Attributes:
        center_jitter: max shift of the crop centre, as a fraction of the crop side.
        scale_jitter: the crop side is multiplied by exp(U(-s, s)).
        rotation_deg: max rotation about the optical axis, degrees.
        brightness: image multiplied by 1 + U(-b, b).
        contrast: blend towards the mean grey with factor 1 + U(-c, c).
        saturation: blend towards per-pixel grey with factor 1 + U(-s, s).
        hue_deg: hue rotation (in YIQ space) by U(-h, h) degrees.
        blur_prob: probability of a Gaussian blur of the crop.
        blur_sigma_max: blur sigma drawn from U(0.3, max), crop pixels.
        occlusion_prob: probability of pasting occluding rectangles over the crop (real
            photos: objects and the other hand cover parts of the hand).
        occlusion_max_frac: each rectangle's sides are drawn from U(0.1, max) x crop side.
        occlusion_max_count: up to this many rectangles per occluded crop.
        context_prob: probability of a context crop: the crop side is multiplied by
            U(1, context_scale_max) and the crop centre shifted so the hand stays inside, so
            the hand is small somewhere in a large context (what a coarse localisation pass
            over a whole photo sees).
        context_scale_max: the largest context factor.
    """

    center_jitter: float = 0.08
    scale_jitter: float = 0.15
    rotation_deg: float = 45.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue_deg: float = 10.0
    blur_prob: float = 0.3
    blur_sigma_max: float = 1.5
    occlusion_prob: float = 0.0
    occlusion_max_frac: float = 0.4
    occlusion_max_count: int = 2
    context_prob: float = 0.0
    context_scale_max: float = 4.0


@dataclass(frozen=True)
class GeometricParams:
    """One draw of the geometric augmentation (identity by default)."""

    angle_rad: float = 0.0
    center_shift: tuple[float, float] = (0.0, 0.0)  # fraction of the crop side
    scale: float = 1.0


@dataclass(frozen=True)
class CropResult:
    """Geometry of one crop.

    Attributes:
        affine: (3, 3) float64, original pixels -> crop pixels (flip included).
        K: (3, 3) float64 crop intrinsics.
        joints_m: (21, 3) float64 joints in the crop camera frame (mirrored, rotated).
        kp2d_px: (21, 2) float64 keypoints in crop pixels (the labels through ``affine``).
        flipped: the image was mirrored.
    """

    affine: np.ndarray
    K: np.ndarray
    joints_m: np.ndarray
    kp2d_px: np.ndarray
    flipped: bool


def compute_crop(kp2d_px: np.ndarray, joints_m: np.ndarray | None, K: np.ndarray | None,
                 image_wh: tuple[int, int], *, flip: bool, crop: CropConfig,
                 params: GeometricParams | None = None) -> CropResult:
    """The crop geometry of one hand (see the module docstring for the composition).

    Args:
        kp2d_px: (21, 2) keypoint labels in original pixels (OpenCV convention).
        joints_m: (21, 3) joints in the original camera frame, metres; None without 3D
            labels (the result's joints_m is then NaN).
        K: (3, 3) intrinsics of the original image (OpenCV convention); None without a
            camera: rotations turn about the image centre and the result's K is NaN.
        image_wh: original image (width, height).
        flip: mirror the image (left hand -> right hand).
        crop: framing.
        params: geometric augmentation draw (None: identity).

    Returns:
        The crop's `CropResult`.
    """
    params = params or GeometricParams()
    width, height = int(image_wh[0]), int(image_wh[1])
    affine = np.eye(3)
    has_camera = K is not None
    if has_camera:
        K_cur = np.asarray(K, dtype=np.float64)
    else:
        # A square-pixel stand-in camera at the image centre: rotations turn about the centre.
        K_cur = np.array([[1.0, 0.0, (width - 1) / 2.0], [0.0, 1.0, (height - 1) / 2.0],
                          [0.0, 0.0, 1.0]])
    joints = (np.full((len(kp2d_px), 3), np.nan) if joints_m is None
              else np.asarray(joints_m, dtype=np.float64))
    if flip:
        affine = flip_matrix(width)
        K_cur = flip_intrinsics(K_cur, width)
        joints = flip_joints(joints)
    if params.angle_rad != 0.0:
        rot = image_rotation_matrix(K_cur, params.angle_rad)
        affine = rot @ affine
        joints = joints @ rotation_z(params.angle_rad).T
    kp_rot = apply_affine(affine, kp2d_px)
    lo, hi = keypoint_box(kp_rot, joints if joints_m is not None else None)
    side = crop.factor * float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0)) * params.scale
    center = (lo + hi) / 2.0 + side * np.asarray(params.center_shift, dtype=np.float64)
    cmat = crop_matrix(center, side, crop.out_size)
    affine = cmat @ affine
    K_crop = cmat @ K_cur if has_camera else np.full((3, 3), np.nan)
    return CropResult(affine=affine, K=K_crop, joints_m=joints,
                      kp2d_px=apply_affine(affine, kp2d_px), flipped=bool(flip))


def sample_geometric(rng: np.random.Generator, aug: AugmentConfig) -> GeometricParams:
    """Draw the geometric augmentation of one sample."""
    angle = np.deg2rad(rng.uniform(-aug.rotation_deg, aug.rotation_deg))
    shift = rng.uniform(-aug.center_jitter, aug.center_jitter, size=2)
    scale = float(np.exp(rng.uniform(-aug.scale_jitter, aug.scale_jitter)))
    # Drawn last and only when enabled, so the other draws stay as they were without it.
    if aug.context_prob > 0 and rng.uniform() < aug.context_prob:
        context = float(rng.uniform(1.0, max(aug.context_scale_max, 1.0)))
        scale *= context
        # The hand box spans at most 1/context of the side: this shift keeps it inside.
        reach = 0.5 * (1.0 - 1.0 / context)
        shift = shift + rng.uniform(-reach, reach, size=2)
    return GeometricParams(angle_rad=float(angle), center_shift=(float(shift[0]),
                           float(shift[1])), scale=scale)


_LUMA_ROWS = np.tile([0.299, 0.587, 0.114], (3, 1))
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def color_matrix(rng: np.random.Generator, aug: AugmentConfig) -> tuple[np.ndarray, float]:
    """One draw of brightness/saturation/hue as a (3, 3) RGB matrix, and a contrast factor."""
    brightness = 1.0 + rng.uniform(-aug.brightness, aug.brightness)
    contrast = 1.0 + rng.uniform(-aug.contrast, aug.contrast)
    saturation = 1.0 + rng.uniform(-aug.saturation, aug.saturation)
    hue = np.deg2rad(rng.uniform(-aug.hue_deg, aug.hue_deg))
    sat = saturation * np.eye(3) + (1.0 - saturation) * _LUMA_ROWS
    # Hue: rotate the chroma (I, Q) plane of YIQ.
    c, s = np.cos(hue), np.sin(hue)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    hue_mat = _FROM_YIQ @ rot @ _TO_YIQ
    return brightness * (hue_mat @ sat), float(contrast)


def photometric(image: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Colour jitter then optional Gaussian blur of a float32 RGB crop in [0, 1] (H, W, 3)."""
    mat, contrast = color_matrix(rng, aug)
    out = cv2.transform(image, mat.astype(np.float32))
    grey_mean = float(out.mean())
    out = out * np.float32(contrast) + np.float32((1.0 - contrast) * grey_mean)
    if rng.uniform() < aug.blur_prob:
        sigma = rng.uniform(0.3, max(aug.blur_sigma_max, 0.3))
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.clip(out, 0.0, 1.0, out=out)


def occlude(image: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Paste up to ``occlusion_max_count`` rectangles of flat colour or noise over a crop.

    The labels stay unchanged: the model learns to place joints it cannot see. Draws
    nothing from ``rng`` when ``occlusion_prob`` is 0, so other draws stay as they were.
    """
    if aug.occlusion_prob <= 0 or rng.uniform() >= aug.occlusion_prob:
        return image
    side = image.shape[0]
    for _ in range(int(rng.integers(1, max(aug.occlusion_max_count, 1) + 1))):
        w, h = (rng.uniform(0.1, max(aug.occlusion_max_frac, 0.1), size=2) * side).astype(int)
        x0, y0 = rng.integers(0, side - w + 1), rng.integers(0, side - h + 1)
        if rng.uniform() < 0.5:
            patch = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        else:
            patch = rng.uniform(0.0, 1.0, size=(h, w, 3)).astype(np.float32)
        image[y0:y0 + h, x0:x0 + w] = patch
    return image
