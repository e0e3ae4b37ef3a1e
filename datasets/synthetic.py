"""Built-in synthetic hand data, written in RHD's and STB's exact on-disk formats.

RHD, STB and MANO cannot be downloaded by a fresh clone, so the demo, the tests and the
benchmarks run on hands rendered here. `generate` writes a data root that the real readers
read unchanged::

    <out>/RHD/RHD_published_v2/{training,evaluation}/{color,mask,depth}/%05d.png
    <out>/RHD/RHD_published_v2/{training,evaluation}/anno_{training,evaluation}.{pickle,mat}
    <out>/STB/images/<SEQ>/SK_color_%d.png           (640x480, one LEFT hand)
    <out>/STB/labels/<SEQ>_SK.mat                    (handPara (3, 21, N) float64, mm)

Scenes. A procedural hand (`datasets.hand_model`: per-person bone lengths and thickness,
joint angles within anatomical limits, left or right) is rotated at random, placed 0.3-0.9 m
from a camera with fx = fy in [260, 310] and cx = cy = 160 (RHD's), and drawn as shaded
tapered capsules, a flat palm plate and nails with a z-buffer (`datasets.render`), with its
forearm (mask class 1, 85 % of frames), random skin tone and lighting, blur and noise.
``difficulty='hard'`` adds cluttered backgrounds (textures, colour noise, shapes, some
skin-coloured), occluding objects in front of the hand (35 % of frames), a torso and head
behind it (35 %, mask class 1) and the other hand (40 %); ``'easy'`` has plain or gradient
backgrounds and nothing else.

RHD rows. RHD always has 42 rows (left 0-20, right 21-41, per hand: wrist, then thumb,
index, middle, ring, pinky each tip -> MCP). The main hand is always drawn. The other hand
is drawn too in some 'hard' samples; otherwise its rows hold a plausible posed hand placed
beside the camera's field of view (in front of the camera, projecting outside the image)
with visibility 0. Readers choose the hand with more visible joints (or more mask pixels).

Pixel convention (OpenCV's, see `datasets.render`): pixel centres sit at integer
coordinates; pixel (row v, column u) is the sample at (u, v); ``uv = (K @ xyz)[:2] / z``
exactly, with cx = cy = 160.0 as in RHD. ``uv_vis`` rows are that projection (float32)
for all 42 rows. A joint is visible when its pixel ``(round(u), round(v))`` is inside the
image, shows that hand (mask class of the same side) and the rendered depth there is not in
front of the joint by more than the hand's half-thickness there plus 6 mm (at most 19.5 mm).

Masks (uint8, mode L): 0 background and objects, 1 arm/body ("person"), 2-16 left fingers (three
classes per finger, thumb first, each tip -> palm), 17 left palm, 18-32 right fingers,
33 right palm. Depth: uint8 RGB PNG with depth_m = (R * 256 + G) / 65535 * 5.

STB. Test split: sequences B1Counting and B1Random; train split: B2..B6 Counting and
Random. Each sequence is one person (shape, skin, sleeve, scene) in a fixed room, one left
hand per frame. Images are rendered with the SK colour intrinsics; labels are the joints in
the SK *depth* camera frame (`datasets.stb_calibration.sk_color_to_depth`) in STB order
(0 palm centre, then pinky, ring, middle, index, thumb, each MCP -> tip); the palm centre
is ``mcp + (wrist - mcp) / 2.2`` (middle MCP), so `utils.joints.stb_palm_to_wrist`
recovers the rendered wrist.

Determinism: every sample draws from ``numpy.random.default_rng([seed, stream, index])``
(never global state), so any worker count gives identical bytes for a seed.
"""

from __future__ import annotations

import argparse
import functools
import io
import multiprocessing
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from datasets.hand_model import (
    HAND_SIDES,
    HandShape,
    PosedHand,
    pose_hand,
    sample_hand,
    sample_pose,
    sample_shape,
)
from datasets.render import (
    Buffers,
    Light,
    background_depth,
    draw_capsule,
    draw_plate,
    encode_depth_rhd,
    make_background,
    random_light,
    random_rgb,
    random_skin_rgb,
    shade,
)
from datasets.stb_calibration import IMAGE_SIZE_WH as STB_SIZE_WH
from datasets.stb_calibration import SK_COLOR_K, sk_color_to_depth
from utils.atomic import write_bytes_atomic
from utils.geometry import intrinsics, project_points
from utils.joints import (
    FINGER_JOINTS,
    FINGERS,
    NUM_JOINTS,
    RHD_TO_CANONICAL,
    STB_TO_CANONICAL,
    invert_order,
)
from utils.progress import progress_bar

DIFFICULTIES = ("easy", "hard")
# What a synthetic set is generated at unless asked otherwise: this CLI, the training CLI and
# run.py all generate a missing set at this difficulty (make demo asks for easy).
DEFAULT_DIFFICULTY = "hard"
RHD_SIZE = 320
RHD_PRINCIPAL_POINT = 160.0
RHD_FOCAL_RANGE = (260.0, 310.0)
DISTANCE_RANGE_M = (0.3, 0.9)
RHD_SPLIT_DIRS = {"train": "training", "test": "evaluation"}
STB_TEST_SEQUENCES = ("B1Counting", "B1Random")
STB_TRAIN_SEQUENCES = tuple(f"B{i}{kind}" for i in range(2, 7) for kind in ("Counting", "Random"))
STB_PALM_FACTOR = 2.2
RHD_FROM_CANONICAL = invert_order(RHD_TO_CANONICAL)
STB_FROM_CANONICAL = invert_order(STB_TO_CANONICAL)

# Random streams of default_rng([seed, stream, index]).
_STREAM_RHD = {"train": 0, "test": 1}
_STREAM_STB_FRAME = 100
_STREAM_STB_SEQUENCE = 200

# Hand-frame points besides the 21 joints: the two sides of the wrist (right hand, metres).
_WRIST_SIDES_M = np.array([[0.017, 0.008, 0.0], [-0.019, 0.008, 0.0]])
_VIS_MARGIN_M = 0.006
_VIS_MARGIN_MAX_M = 0.0195
_LEFT_LABEL_OFFSET = 0
_RIGHT_LABEL_OFFSET = 16
ARM_LABEL = 1


@dataclass(frozen=True)
class PlacedHand:
    """A hand in the camera frame.

    Attributes:
        side: 'left' or 'right'.
        joints_m: (21, 3) canonical joints, camera frame, metres.
        wrist_sides_m: (2, 3) radial and ulnar side of the wrist, camera frame.
        arm_m: (2, 3) forearm start (just behind the wrist) and elbow, camera frame.
        nail_normals: (5, 3) unit normal of each finger's nail, camera frame.
        shape: the hand's proportions (radii used for drawing and visibility).
        drawn: whether the hand is drawn in the image.
    """

    side: str
    joints_m: np.ndarray
    wrist_sides_m: np.ndarray
    arm_m: np.ndarray
    nail_normals: np.ndarray
    shape: HandShape
    drawn: bool


@dataclass(frozen=True)
class RenderedSample:
    """One rendered frame with its labels.

    Attributes:
        image_rgb: (H, W, 3) uint8.
        label: (H, W) uint8 RHD mask classes.
        depth_m: (H, W) float32 depth in metres.
        K: (3, 3) float64 intrinsics.
        hands: the left and right hand (in that order; STB frames have only the left).
        visible: per hand, (21,) bool visibility (canonical order).
    """

    image_rgb: np.ndarray
    label: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
    hands: tuple[PlacedHand, ...]
    visible: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class SyntheticDataset:
    """What `generate` wrote.

    Attributes:
        root: the data root (``<out>``).
        rhd_root: ``<out>/RHD/RHD_published_v2``.
        stb_root: ``<out>/STB``, or None when STB was not written.
        num_train, num_test: RHD-format frames per split.
        stb_sequences: split ('train' / 'test') -> STB sequence names written.
        stb_frames_per_sequence: frames in each STB sequence.
    """

    root: Path
    rhd_root: Path
    stb_root: Path | None
    num_train: int
    num_test: int
    stb_sequences: dict[str, tuple[str, ...]]
    stb_frames_per_sequence: int


# --- Geometry ------------------------------------------------------------------------------

def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) rotation drawn uniformly (from a random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def upright_rotation(rng: np.random.Generator, max_tilt_deg: float, palm_to_camera: bool,
                     max_roll_deg: float) -> np.ndarray:
    """Fingers up in the image, palm (or back) to the camera, tilted and rolled at random.

    Hand frame -> camera frame: hand +y (fingers) -> image up (-y), hand +z (palm normal)
    -> towards the camera (-z) when ``palm_to_camera``.
    """
    if palm_to_camera:
        base = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    else:
        base = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    tilt = np.deg2rad(max_tilt_deg)
    R = _axis_rotation(0, rng.uniform(-tilt, tilt)) @ _axis_rotation(1, rng.uniform(-tilt, tilt))
    roll = _axis_rotation(2, np.deg2rad(rng.uniform(-max_roll_deg, max_roll_deg)))
    return roll @ R @ base


def _arm_in_hand_frame(rng: np.random.Generator, size: float, side: str) -> np.ndarray:
    """(2, 3) forearm axis start and elbow, hand frame, with random wrist flexion/deviation."""
    flexion = np.deg2rad(rng.uniform(-60.0, 50.0))
    deviation = np.deg2rad(rng.uniform(-25.0, 15.0))
    direction = _axis_rotation(2, deviation) @ _axis_rotation(0, flexion) @ np.array([0, -1.0, 0])
    start = 0.03 * size * direction
    end = rng.uniform(0.28, 0.45) * size * direction
    arm = np.stack([start, end])
    if side == "left":
        arm[:, 0] *= -1.0
    return arm


def _towards_camera(direction: np.ndarray) -> bool:
    return bool(direction[2] < -0.3 * np.linalg.norm(direction))


def place_hand(rng: np.random.Generator, side: str, rotation: np.ndarray, K: np.ndarray,
               centre_px: np.ndarray, depth_m: float, drawn: bool,
               posed: PosedHand | None = None) -> PlacedHand:
    """Pose a random hand and put its joint centroid at pixel ``centre_px``, depth ``depth_m``.

    Args:
        rng: random source.
        side: 'left' or 'right'.
        rotation: (3, 3) hand frame -> camera frame.
        K: (3, 3) intrinsics.
        centre_px: (2,) target pixel of the joints' centroid.
        depth_m: target depth of the centroid.
        drawn: recorded on the result.
        posed: a fixed posed hand instead of a random one.
    """
    posed = posed if posed is not None else sample_hand(rng, side)
    joints_h, shape = posed.joints_m, posed.shape
    size = shape.size
    wrist_sides = _WRIST_SIDES_M * size
    if side == "left":
        wrist_sides = wrist_sides * np.array([-1.0, 1.0, 1.0])
    arm = _arm_in_hand_frame(rng, size, side)
    # The forearm comes from a body beyond the hand; one pointing at the camera would fill
    # the frame. First bend the wrist the other way (mirror the forearm through the palm
    # plane); if that is not enough, turn the hand half way round the image's vertical
    # axis (this keeps uniform rotations uniform).
    if _towards_camera(rotation @ (arm[1] - arm[0])):
        arm = arm * np.array([1.0, 1.0, -1.0])
        if _towards_camera(rotation @ (arm[1] - arm[0])):
            rotation = np.diag([-1.0, 1.0, -1.0]) @ rotation
    centroid = joints_h.mean(axis=0)
    ray = np.linalg.solve(K, np.array([centre_px[0], centre_px[1], 1.0]))
    target = ray * depth_m

    def to_camera(points: np.ndarray) -> np.ndarray:
        return (points - centroid) @ rotation.T + target

    return PlacedHand(side=side, joints_m=to_camera(joints_h), wrist_sides_m=to_camera(wrist_sides),
                      arm_m=to_camera(arm), nail_normals=posed.nail_normals @ rotation.T,
                      shape=shape, drawn=drawn)


def _in_image(uv: np.ndarray, z: np.ndarray, width: int, height: int) -> np.ndarray:
    return ((uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < height - 0.5) & (z > 0))


def _place_outside(rng: np.random.Generator, side: str, K: np.ndarray, width: int,
                   height: int) -> PlacedHand:
    """An undrawn hand in front of the camera whose joints all project outside the image."""
    rotation = random_rotation(rng)
    depth = rng.uniform(*DISTANCE_RANGE_M)
    posed = sample_hand(rng, side)
    horizontal = rng.random() < 0.5
    sign = 1.0 if rng.random() < 0.5 else -1.0
    along = rng.uniform(0.0, width if horizontal else height)
    for push in range(50):
        away = 0.5 * (width if horizontal else height) + 120.0 + 40.0 * push
        if horizontal:
            centre = np.array([width / 2 + sign * away, along])
        else:
            centre = np.array([along, height / 2 + sign * away])
        hand = place_hand(rng, side, rotation, K, centre, depth, drawn=False,
                          posed=posed)
        uv = project_points(K, hand.joints_m)
        if not _in_image(uv, hand.joints_m[:, 2], width, height).any():
            return hand
    raise RuntimeError("could not place the undrawn hand outside the image")


# --- Drawing -------------------------------------------------------------------------------

def _hand_label_offset(side: str) -> int:
    return _LEFT_LABEL_OFFSET if side == "left" else _RIGHT_LABEL_OFFSET


def draw_hand(buf: Buffers, K: np.ndarray, hand: PlacedHand, skin_material: int,
              arm_material: int | None) -> None:
    """Draw fingers, nails, palm and (if ``arm_material``) the forearm of ``hand``.

    Nails use material ``skin_material + 1``.
    """
    joints = hand.joints_m
    radius = hand.shape.radius_m
    offset = _hand_label_offset(hand.side)
    for fi, finger in enumerate(FINGERS):
        ids = FINGER_JOINTS[finger]
        for k in range(3):
            # RHD numbers the three parts of a finger from the tip towards the palm.
            label = offset + 2 + 3 * fi + (2 - k)
            draw_capsule(buf, K, joints[ids[k]], joints[ids[k + 1]], radius[ids[k]],
                         radius[ids[k + 1]], label, skin_material)
        # A nail: a thin capsule just proud of the back of the distal phalanx.
        tip, r_tip = joints[ids[3]], radius[ids[3]]
        segment = tip - joints[ids[2]]
        lift = 0.62 * r_tip * hand.nail_normals[fi]
        draw_capsule(buf, K, tip - 0.55 * segment + lift, tip - 0.1 * segment + lift,
                     0.5 * r_tip, 0.5 * r_tip, offset + 2 + 3 * fi, skin_material + 1)
    palm = offset + 17
    rw = radius[0]
    wrist = joints[0]
    radial, ulnar = hand.wrist_sides_m
    mcps = [joints[FINGER_JOINTS[f][0]] for f in FINGERS[1:]]
    mcp_r = [radius[FINGER_JOINTS[f][0]] * 1.15 for f in FINGERS[1:]]
    for mcp, r in zip(mcps, mcp_r, strict=True):
        draw_capsule(buf, K, wrist, mcp, rw, r, palm, skin_material)
    for a, b, ra, rb in zip(mcps[:-1], mcps[1:], mcp_r[:-1], mcp_r[1:], strict=True):
        draw_capsule(buf, K, a, b, ra, rb, palm, skin_material)
    draw_capsule(buf, K, radial, mcps[0], rw * 0.9, mcp_r[0], palm, skin_material)
    draw_capsule(buf, K, ulnar, mcps[-1], rw * 0.9, mcp_r[-1], palm, skin_material)
    draw_capsule(buf, K, radial, ulnar, rw * 0.9, rw * 0.9, palm, skin_material)
    thumb_cmc = joints[FINGER_JOINTS["thumb"][0]]
    draw_capsule(buf, K, wrist, thumb_cmc, rw, radius[FINGER_JOINTS["thumb"][0]], palm,
                 skin_material)
    # The flat of the palm between the rims, slightly inside them so the rims round it off.
    outline = np.stack([ulnar, radial, thumb_cmc, *mcps])
    draw_plate(buf, K, outline, rw * 0.95, palm, skin_material)
    draw_capsule(buf, K, thumb_cmc, mcps[0], rw * 0.7, mcp_r[0] * 0.8, palm, skin_material)
    if arm_material is not None:
        size = hand.shape.size
        draw_capsule(buf, K, hand.arm_m[0], hand.arm_m[1], 0.021 * size, 0.032 * size,
                     ARM_LABEL, arm_material)


def joint_visibility(buf: Buffers, K: np.ndarray, hand: PlacedHand) -> np.ndarray:
    """(21,) bool: joint inside the image, its pixel shows this hand, depth test passes."""
    height, width = buf.depth_m.shape
    joints = hand.joints_m
    uv = project_points(K, joints)
    visible = _in_image(uv, joints[:, 2], width, height)
    if not hand.drawn:
        return np.zeros(NUM_JOINTS, dtype=bool)
    offset = _hand_label_offset(hand.side)
    for j in np.flatnonzero(visible):
        u, v = int(np.round(uv[j, 0])), int(np.round(uv[j, 1]))
        label = int(buf.label[v, u])
        own = offset + 2 <= label <= offset + 17
        # Capped so that a visible joint's depth-map value is always within 2 cm of its z.
        margin = min(hand.shape.radius_m[j] + _VIS_MARGIN_M, _VIS_MARGIN_MAX_M)
        visible[j] = own and buf.depth_m[v, u] >= joints[j, 2] - margin
    return visible


def _draw_occluders(rng: np.random.Generator, buf: Buffers, K: np.ndarray, target: PlacedHand,
                    first_material: int) -> list[np.ndarray]:
    """Draw 1-2 objects between the camera and the hand; returns their albedos."""
    albedos = []
    for i in range(int(rng.integers(1, 3))):
        anchor = target.joints_m[rng.integers(0, NUM_JOINTS)]
        distance = anchor[2] * rng.uniform(0.1, 0.5)
        centre = anchor * (1.0 - distance / anchor[2]) + rng.normal(0.0, 0.02, 3)
        centre[2] = max(centre[2], 0.15)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        half = rng.uniform(0.0, 0.15) * axis
        r0 = rng.uniform(0.006, 0.04)
        r1 = r0 * rng.uniform(0.6, 1.4)
        draw_capsule(buf, K, centre - half, centre + half, r0, r1, 0, first_material + i)
        albedos.append(random_rgb(rng))
    return albedos


def _draw_body(rng: np.random.Generator, buf: Buffers, K: np.ndarray, hand: PlacedHand,
               torso_material: int, head_material: int) -> None:
    """Draw a torso and head (mask class 1) behind ``hand``, near its elbow."""
    radius = rng.uniform(0.13, 0.18)
    behind = hand.joints_m[:, 2].max() + radius + rng.uniform(0.03, 0.3)
    centre = hand.arm_m[1] + np.array([rng.normal(0.0, 0.1), rng.uniform(-0.05, 0.25), 0.0])
    centre[2] = max(centre[2], behind)
    tilt = rng.normal(0.0, 0.25)
    axis = np.array([np.sin(tilt), -np.cos(tilt), 0.0]) * rng.uniform(0.18, 0.25)
    draw_capsule(buf, K, centre - axis, centre + axis, radius * 0.9, radius, ARM_LABEL,
                 torso_material)
    head = centre + axis * (1.0 + (radius + 0.12) / np.linalg.norm(axis))
    draw_capsule(buf, K, head, head + np.array([0.0, 0.02, 0.0]), 0.085, 0.08, ARM_LABEL,
                 head_material)


_NOISE_MARGIN = 64


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> np.ndarray:
    """A fixed (H + 64, W + 64, 3) field of unit Gaussian noise, made once per process."""
    bank = np.random.default_rng(0x5EED).standard_normal(
        (height + _NOISE_MARGIN, width + _NOISE_MARGIN, 3), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _sensor_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float32 unit Gaussian noise: a random window of the bank, channels shuffled.

    Drawing 300k normals per frame cost as much as rendering the hand; a shifted window of a
    fixed field is as good for sensor noise and is deterministic in ``rng``.
    """
    dy, dx = rng.integers(0, _NOISE_MARGIN, size=2)
    window = _noise_bank(height, width)[dy:dy + height, dx:dx + width]
    return np.ascontiguousarray(window[..., rng.permutation(3)])


def camera_finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera effects: slight blur (anti-aliasing), exposure, noise; -> uint8."""
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.45, 1.0))
    noise = _sensor_noise(rng, image.shape[0], image.shape[1])
    gain, sigma, offset = rng.uniform(0.8, 1.2), rng.uniform(0.5, 4.0), rng.uniform(-15.0, 15.0)
    # One pass: gain * image + sigma * noise + offset, rounded and saturated to uint8.
    return cv2.addWeighted(image, gain, noise, sigma, offset, dtype=cv2.CV_8U)


def _nail_albedo(skin: np.ndarray) -> np.ndarray:
    return 0.55 * skin + 0.45 * np.array([250.0, 225.0, 220.0])


def _arm_albedo(rng: np.random.Generator, skin: np.ndarray) -> np.ndarray:
    return skin.copy() if rng.random() < 0.5 else random_rgb(rng)


def _skin_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    small = rng.normal(1.0, 0.05, (height // 8, width // 8)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def render_rhd_sample(seed: int, split: str, index: int, difficulty: str) -> RenderedSample:
    """Render RHD-format frame ``index`` of ``split`` ('train' | 'test') for ``seed``."""
    _check_difficulty(difficulty)
    if split not in _STREAM_RHD:
        raise ValueError(f"split must be one of {tuple(_STREAM_RHD)}, got {split!r}")
    rng = np.random.default_rng([seed, _STREAM_RHD[split], index])
    hard = difficulty == "hard"
    f = rng.uniform(*RHD_FOCAL_RANGE)
    K = intrinsics(f, f, RHD_PRINCIPAL_POINT, RHD_PRINCIPAL_POINT)
    main_side = HAND_SIDES[int(rng.integers(0, 2))]
    other_side = HAND_SIDES[1 - HAND_SIDES.index(main_side)]

    if rng.random() < 0.5:
        rotation = random_rotation(rng)
    else:
        rotation = upright_rotation(rng, 60.0, bool(rng.random() < 0.5), 180.0)
    centre = RHD_SIZE / 2 + np.clip(rng.normal(0.0, 35.0, 2), -80.0, 80.0)
    main = place_hand(rng, main_side, rotation, K, centre, rng.uniform(*DISTANCE_RANGE_M), True)
    if hard and rng.random() < 0.4:
        other = place_hand(rng, other_side, random_rotation(rng), K,
                           rng.uniform(10.0, RHD_SIZE - 10.0, 2),
                           rng.uniform(*DISTANCE_RANGE_M), True)
    else:
        other = _place_outside(rng, other_side, K, RHD_SIZE, RHD_SIZE)

    buf = Buffers.empty(RHD_SIZE, RHD_SIZE)
    skin = random_skin_rgb(rng)
    # Materials: 1 skin, 2 nails, 3 forearm (sleeve or skin); 4-6 the same for the other hand.
    albedos = [np.zeros(3), skin, _nail_albedo(skin), _arm_albedo(rng, skin)]
    draw_hand(buf, K, main, 1, 3 if rng.random() < 0.85 else None)
    if other.drawn:
        other_skin = skin if rng.random() < 0.7 else random_skin_rgb(rng)
        albedos += [other_skin, _nail_albedo(other_skin), _arm_albedo(rng, other_skin)]
        draw_hand(buf, K, other, 4, 6 if rng.random() < 0.85 else None)
    if hard and rng.random() < 0.35:
        albedos += _draw_occluders(rng, buf, K, main, len(albedos))
    if hard and rng.random() < 0.35:
        _draw_body(rng, buf, K, main, len(albedos), 1)
        albedos.append(random_rgb(rng))

    hands = (main, other) if main_side == "left" else (other, main)
    visible = tuple(joint_visibility(buf, K, hand) for hand in hands)
    image = _compose(rng, buf, np.array(albedos), hard, random_light(rng))
    depth = np.where(np.isfinite(buf.depth_m), buf.depth_m,
                     background_depth(rng, RHD_SIZE, RHD_SIZE)).astype(np.float32)
    return RenderedSample(image_rgb=image, label=buf.label, depth_m=depth, K=K, hands=hands,
                          visible=visible)


def _compose(rng: np.random.Generator, buf: Buffers, albedos: np.ndarray, hard: bool,
             light: Light) -> np.ndarray:
    height, width = buf.depth_m.shape
    background = make_background(rng, height, width, cluttered=hard)
    texture = _skin_texture(rng, height, width)
    return camera_finish(shade(buf, background, albedos, light, texture), rng)


def rhd_annotation(sample: RenderedSample) -> dict[str, np.ndarray]:
    """RHD's per-frame record: 'xyz' (42, 3) m, 'uv_vis' (42, 3), 'K' (3, 3), float32."""
    xyz = np.concatenate([hand.joints_m[list(RHD_FROM_CANONICAL)] for hand in sample.hands])
    vis = np.concatenate([v[list(RHD_FROM_CANONICAL)] for v in sample.visible])
    uv = project_points(sample.K, xyz)
    uv_vis = np.concatenate([uv, vis[:, None].astype(np.float64)], axis=1)
    return {"xyz": xyz.astype(np.float32), "uv_vis": uv_vis.astype(np.float32),
            "K": sample.K.astype(np.float32)}


# --- STB -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _StbSequenceLook:
    shape_seed: int
    skin: np.ndarray
    sleeve: np.ndarray
    background: np.ndarray
    random_poses: bool


@functools.lru_cache(maxsize=len(STB_TEST_SEQUENCES) + len(STB_TRAIN_SEQUENCES))
def _stb_sequence_look(seed: int, sequence_id: int, sequence: str,
                       difficulty: str) -> _StbSequenceLook:
    """The fixed look of one STB sequence (cached: every frame of a sequence shares it)."""
    rng = np.random.default_rng([seed, _STREAM_STB_SEQUENCE, sequence_id])
    width, height = STB_SIZE_WH
    skin = random_skin_rgb(rng)
    sleeve = _arm_albedo(rng, skin)
    background = make_background(rng, height, width, cluttered=difficulty == "hard")
    background.setflags(write=False)  # shared by every frame of the sequence
    return _StbSequenceLook(shape_seed=int(rng.integers(0, 2**31)), skin=skin, sleeve=sleeve,
                            background=background, random_poses=sequence.endswith("Random"))


def _stb_sequence_id(sequence: str) -> int:
    names = STB_TEST_SEQUENCES + STB_TRAIN_SEQUENCES
    if sequence not in names:
        raise ValueError(f"unknown STB sequence {sequence!r}; expected one of {names}")
    return names.index(sequence)


def render_stb_sample(seed: int, sequence: str, frame: int, difficulty: str) -> RenderedSample:
    """Render SK colour frame ``frame`` of STB ``sequence`` (one left hand, 640x480)."""
    _check_difficulty(difficulty)
    sequence_id = _stb_sequence_id(sequence)
    look = _stb_sequence_look(seed, sequence_id, sequence, difficulty)
    rng = np.random.default_rng([seed, _STREAM_STB_FRAME + sequence_id, frame])
    width, height = STB_SIZE_WH
    K = np.asarray(SK_COLOR_K, dtype=np.float64)
    shape = sample_shape(np.random.default_rng(look.shape_seed))
    pose = sample_pose(rng, "mixed" if look.random_poses else "counting")
    posed = pose_hand(shape, pose, "left")
    if look.random_poses:
        rotation = upright_rotation(rng, 70.0, bool(rng.random() < 0.7), 60.0)
    else:
        rotation = upright_rotation(rng, 35.0, True, 25.0)
    centre = np.array([width / 2, height / 2]) + rng.normal(0.0, [70.0, 50.0])
    hand = place_hand(rng, "left", rotation, K, centre, rng.uniform(0.35, 0.65), True,
                      posed=posed)
    buf = Buffers.empty(height, width)
    draw_hand(buf, K, hand, 1, 3)
    visible = joint_visibility(buf, K, hand)
    background = look.background * rng.uniform(0.93, 1.07)
    texture = _skin_texture(rng, height, width)
    albedos = np.array([np.zeros(3), look.skin, _nail_albedo(look.skin), look.sleeve])
    image = camera_finish(shade(buf, background.astype(np.float32), albedos, random_light(rng),
                          texture), rng)
    depth = np.where(np.isfinite(buf.depth_m), buf.depth_m, 2.0).astype(np.float32)
    return RenderedSample(image_rgb=image, label=buf.label, depth_m=depth, K=K, hands=(hand,),
                          visible=(visible,))


def stb_hand_para_mm(joints_color_m: np.ndarray) -> np.ndarray:
    """Canonical colour-camera joints (21, 3) m -> STB label rows (21, 3) mm, depth frame.

    Row 0 becomes the palm centre ``mcp + (wrist - mcp) / 2.2`` (middle MCP), the inverse
    of `utils.joints.stb_palm_to_wrist`.
    """
    joints = joints_color_m * 1000.0
    out = joints.copy()
    mcp = joints[FINGER_JOINTS["middle"][0]]
    out[0] = mcp + (joints[0] - mcp) / STB_PALM_FACTOR
    return sk_color_to_depth(out)[list(STB_FROM_CANONICAL)]


# --- Writing -------------------------------------------------------------------------------

def _check_difficulty(difficulty: str) -> None:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")


# Huffman-only deflate: 30 % faster than the default for noisy colour images, similar size.
PNG_COLOR_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
PNG_MASK_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                   cv2.IMWRITE_PNG_STRATEGY_RLE]
PNG_DEPTH_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]


def _write_png(path: Path, image: np.ndarray, params: list[int] | None = None) -> None:
    if not cv2.imwrite(str(path), image, params or []):
        raise OSError(f"could not write image {path}")


def _rhd_task(task: tuple[int, str, int, str, str]) -> tuple[str, int, dict[str, np.ndarray]]:
    seed, split, index, difficulty, split_dir = task
    sample = render_rhd_sample(seed, split, index, difficulty)
    root = Path(split_dir)
    name = f"{index:05d}.png"
    _write_png(root / "color" / name, cv2.cvtColor(sample.image_rgb, cv2.COLOR_RGB2BGR),
               PNG_COLOR_PARAMS)
    _write_png(root / "mask" / name, sample.label, PNG_MASK_PARAMS)
    _write_png(root / "depth" / name,
               cv2.cvtColor(encode_depth_rhd(sample.depth_m), cv2.COLOR_RGB2BGR), PNG_DEPTH_PARAMS)
    return split, index, rhd_annotation(sample)


def _stb_task(task: tuple[int, str, int, str, str]) -> tuple[str, int, np.ndarray]:
    seed, sequence, frame, difficulty, image_dir = task
    sample = render_stb_sample(seed, sequence, frame, difficulty)
    _write_png(Path(image_dir) / f"SK_color_{frame}.png",
               cv2.cvtColor(sample.image_rgb, cv2.COLOR_RGB2BGR), PNG_COLOR_PARAMS)
    return sequence, frame, stb_hand_para_mm(sample.hands[0].joints_m)


def _run_task(task: tuple) -> tuple:
    kind, args = task
    return _rhd_task(args) if kind == "rhd" else _stb_task(args)


def _worker_init() -> None:
    # One process per core: library threads would only contend.
    cv2.setNumThreads(1)


def _map(tasks: list[tuple], workers: int, progress: bool) -> Iterator[tuple]:
    bar = progress_bar(total=len(tasks), desc="synthetic", unit="img", disable=not progress)
    if workers <= 1:
        for task in tasks:
            yield _run_task(task)
            bar.update()
    else:
        # A fork server that has imported the renderer once forks clean workers quickly;
        # plain fork is unsafe once torch or OpenCV threads exist in the caller. Windows
        # has no fork server: spawn there. This module itself is not preloaded: under
        # `python -m datasets.synthetic` it is __main__, and runpy warns when it finds it
        # imported twice.
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["datasets.render", "datasets.hand_model"])
        else:
            ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for result in pool.imap_unordered(_run_task, tasks, chunksize=8):
                yield result
                bar.update()
    bar.close()


_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by 2DHandFlow datasets.synthetic"


def save_mat(path: Path, variables: dict) -> None:
    """`scipy.io.savemat` with a fixed header text (scipy stamps the time: not reproducible)."""
    stream = io.BytesIO()
    scipy.io.savemat(stream, variables, format="5", oned_as="row")
    data = bytearray(stream.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")
    write_bytes_atomic(path, bytes(data))


def write_rhd_annotations(split_dir: Path, split_name: str,
                          annotations: dict[int, dict[str, np.ndarray]]) -> None:
    """Write ``anno_<split>.pickle`` (protocol 2, like the release) and ``anno_<split>.mat``."""
    ordered = {i: annotations[i] for i in sorted(annotations)}
    write_bytes_atomic(split_dir / f"anno_{split_name}.pickle", pickle.dumps(ordered, protocol=2))
    save_mat(split_dir / f"anno_{split_name}.mat",
             {f"frame{i}": {"K": a["K"], "xyz": a["xyz"], "uv_vis": a["uv_vis"]}
              for i, a in ordered.items()})


def default_stb_frames_per_sequence(num_train: int) -> int:
    """STB is a side dish: about one STB frame per 10 RHD training frames, over 10 sequences."""
    return max(1, num_train // 100)


def generate(out_dir: str | os.PathLike, num_train: int, num_test: int, seed: int = 0,
             difficulty: str = DEFAULT_DIFFICULTY, workers: int | None = None, stb: bool = True,
             stb_frames_per_sequence: int | None = None,
             progress: bool = False) -> SyntheticDataset:
    """Render a synthetic data root in RHD's and STB's formats.

    Args:
        out_dir: the data root to write (``<out>/RHD/...`` and ``<out>/STB/...``); existing
            files of the same names are overwritten, other files are left as they are.
        num_train: RHD-format training frames (``training/``). With 0 the training folder
            is neither created nor touched (so an existing one survives).
        num_test: RHD-format evaluation frames (``evaluation/``); 0 likewise.
        seed: random seed; the same seed writes identical bytes.
        difficulty: 'easy' (plain backgrounds, one hand, no occluders) or 'hard'.
        workers: processes (default ``os.cpu_count()``); 1 renders in this process.
        stb: also write the STB part.
        stb_frames_per_sequence: frames per STB sequence (default
            `default_stb_frames_per_sequence`).
        progress: show a progress bar (utils.progress).

    Returns:
        A `SyntheticDataset` describing what was written.
    """
    _check_difficulty(difficulty)
    if num_train < 0 or num_test < 0:
        raise ValueError(f"frame counts must be >= 0, got num_train={num_train}, "
                         f"num_test={num_test}")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir)
    rhd_root = root / "RHD" / "RHD_published_v2"
    tasks: list[tuple] = []
    counts = {"train": num_train, "test": num_test}
    for split, count in counts.items():
        if count == 0:
            continue  # leave an existing split of that name alone
        split_dir = rhd_root / RHD_SPLIT_DIRS[split]
        for sub in ("color", "mask", "depth"):
            (split_dir / sub).mkdir(parents=True, exist_ok=True)
        tasks += [("rhd", (seed, split, i, difficulty, str(split_dir))) for i in range(count)]

    frames = (default_stb_frames_per_sequence(num_train) if stb_frames_per_sequence is None
              else int(stb_frames_per_sequence))
    if frames < 1:
        raise ValueError(f"stb_frames_per_sequence must be >= 1, got {frames}")
    stb_root = root / "STB" if stb else None
    sequences = {"train": STB_TRAIN_SEQUENCES, "test": STB_TEST_SEQUENCES} if stb else {}
    if stb_root is not None:
        (stb_root / "labels").mkdir(parents=True, exist_ok=True)
        for sequence in STB_TEST_SEQUENCES + STB_TRAIN_SEQUENCES:
            image_dir = stb_root / "images" / sequence
            image_dir.mkdir(parents=True, exist_ok=True)
            tasks += [("stb", (seed, sequence, i, difficulty, str(image_dir)))
                      for i in range(frames)]

    rhd_annos: dict[str, dict[int, dict[str, np.ndarray]]] = {"train": {}, "test": {}}
    stb_labels: dict[str, dict[int, np.ndarray]] = {}
    for result in _map(tasks, workers, progress):
        if isinstance(result[2], dict):
            split, index, anno = result
            rhd_annos[split][index] = anno
        else:
            sequence, frame, para = result
            stb_labels.setdefault(sequence, {})[frame] = para

    for split in (split for split, count in counts.items() if count > 0):
        write_rhd_annotations(rhd_root / RHD_SPLIT_DIRS[split], RHD_SPLIT_DIRS[split],
                              rhd_annos[split])
    if stb_root is not None:
        for sequence, by_frame in stb_labels.items():
            hand_para = np.stack([by_frame[i] for i in range(frames)], axis=-1)  # (21, 3, N)
            save_mat(stb_root / "labels" / f"{sequence}_SK.mat",
                     {"handPara": np.ascontiguousarray(hand_para.transpose(1, 0, 2))})
    return SyntheticDataset(root=root, rhd_root=rhd_root, stb_root=stb_root,
                            num_train=num_train, num_test=num_test,
                            stb_sequences={k: tuple(v) for k, v in sequences.items()},
                            stb_frames_per_sequence=frames if stb else 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/SYNTH", help="data root to write")
    parser.add_argument("--num_train", "--num-train",
                        type=int, default=2000, help="RHD training frames")
    parser.add_argument("--num_test", "--num-test",
                        type=int, default=300, help="RHD evaluation frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default=DEFAULT_DIFFICULTY)
    parser.add_argument("--workers", type=int, default=None,
                        help="processes (default: all cores)")
    parser.add_argument("--stb_frames_per_sequence", "--stb-frames-per-sequence", type=int,
                        default=None,
                        help="frames in each of the 12 STB sequences (default num_train/100)")
    parser.add_argument("--no_stb", "--no-stb", action="store_true", help="skip the STB part")
    args = parser.parse_args(argv)
    result = generate(args.out, args.num_train, args.num_test, seed=args.seed,
                      difficulty=args.difficulty, workers=args.workers, stb=not args.no_stb,
                      stb_frames_per_sequence=args.stb_frames_per_sequence, progress=True)
    print(f"wrote {result.num_train} + {result.num_test} RHD-format frames to {result.rhd_root}"
          + (f" and {result.stb_frames_per_sequence} frames x 12 STB sequences to "
             f"{result.stb_root}" if result.stb_root else ""))


if __name__ == "__main__":
    main()
