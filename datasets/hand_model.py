"""A procedural 3D hand: bone lengths, anatomical joint angles and forward kinematics.

The synthetic generator (`datasets.synthetic`) poses these hands and draws them with
`datasets.render`. Everything here is a pure function of a ``numpy.random.Generator``.

The hand frame of a RIGHT hand (metres): origin at the wrist, +y from the wrist towards
the middle finger, +x towards the thumb (radial side), +z out of the palm (palm normal,
``x cross y``). Fingers flex towards +z. A LEFT hand is the mirror image (x -> -x), so
both hands share one pose model.

Joints are in the canonical order of `utils.joints` (0 wrist, thumb, index, middle,
ring, pinky, each from the palm outwards).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.joints import FINGER_JOINTS, FINGERS, NUM_JOINTS

HAND_SIDES = ("left", "right")

# Mean adult geometry (metres), right hand frame. MCP (thumb: CMC) positions.
_BASE_XYZ = {
    "thumb": (0.020, 0.030, 0.010),
    "index": (0.026, 0.087, 0.002),
    "middle": (0.005, 0.090, 0.000),
    "ring": (-0.014, 0.085, 0.003),
    "pinky": (-0.031, 0.076, 0.007),
}
# Bone lengths from the base joint outwards (thumb: metacarpal, proximal, distal).
_PHALANX_M = {
    "thumb": (0.042, 0.032, 0.028),
    "index": (0.041, 0.025, 0.022),
    "middle": (0.046, 0.029, 0.023),
    "ring": (0.043, 0.028, 0.022),
    "pinky": (0.034, 0.020, 0.020),
}
# Half-thickness at the four joints of each finger, base to tip.
_RADIUS_M = {
    "thumb": (0.0125, 0.0105, 0.0095, 0.0085),
    "index": (0.0095, 0.0085, 0.0075, 0.0066),
    "middle": (0.0098, 0.0088, 0.0078, 0.0068),
    "ring": (0.0092, 0.0082, 0.0073, 0.0064),
    "pinky": (0.0082, 0.0072, 0.0065, 0.0058),
}
# Resting splay of each finger, degrees from +y towards +x (thumb side).
_SPLAY_DEG = {"index": 7.0, "middle": 0.0, "ring": -8.0, "pinky": -17.0}

# Anatomical limits in degrees (flexion positive towards the palm).
MCP_FLEX_DEG = (-20.0, 90.0)
PIP_FLEX_DEG = (-5.0, 110.0)
DIP_FLEX_DEG = (-5.0, 80.0)
FINGER_ABDUCTION_DEG = (-15.0, 15.0)
THUMB_ABDUCTION_DEG = (15.0, 70.0)  # metacarpal angle from +y towards +x in the palm plane
THUMB_OPPOSITION_DEG = (0.0, 75.0)  # metacarpal rotation out of the palm plane, towards +z
THUMB_MCP_FLEX_DEG = (-10.0, 60.0)
THUMB_IP_FLEX_DEG = (-15.0, 80.0)


@dataclass(frozen=True)
class HandShape:
    """Per-person hand proportions.

    Attributes:
        base_m: (5, 3) base joint of each finger (thumb CMC, finger MCPs) in the hand frame.
        phalanx_m: (5, 3) bone lengths of each finger from the base joint outwards.
        radius_m: (21,) half-thickness of the hand at each canonical joint (row 0: palm
            half-thickness at the wrist).
        size: overall scale relative to the mean hand (1.0).
    """

    base_m: np.ndarray
    phalanx_m: np.ndarray
    radius_m: np.ndarray
    size: float


@dataclass(frozen=True)
class HandPose:
    """Joint angles in radians.

    Attributes:
        flex: (5, 3) flexion of each finger at its three joints, base to tip (thumb:
            opposition, MCP, IP; the thumb's CMC has its own two angles below).
        abduction: (5,) sideways angle of each finger (thumb: its palm-plane abduction).
    """

    flex: np.ndarray
    abduction: np.ndarray


def sample_shape(rng: np.random.Generator) -> HandShape:
    """Draw hand proportions: overall size, palm width, finger lengths and thickness."""
    size = rng.uniform(0.82, 1.18)
    palm_width = rng.normal(1.0, 0.06)
    palm_length = rng.normal(1.0, 0.05)
    thickness = rng.uniform(0.9, 1.25)
    base = np.array([_BASE_XYZ[f] for f in FINGERS]) * size
    base[:, 0] *= palm_width
    base[:, 1] *= palm_length
    finger_scale = rng.normal(1.0, 0.05, size=(5, 1)) * rng.normal(1.0, 0.035, size=(5, 3))
    phalanx = np.array([_PHALANX_M[f] for f in FINGERS]) * size * finger_scale
    radius = np.zeros(NUM_JOINTS)
    radius[0] = 0.0125 * size * thickness
    for finger in FINGERS:
        radius[list(FINGER_JOINTS[finger])] = np.array(_RADIUS_M[finger]) * size * thickness
    return HandShape(base_m=base, phalanx_m=phalanx, radius_m=radius, size=float(size))


def _deg(lo_hi: tuple[float, float]) -> tuple[float, float]:
    return np.deg2rad(lo_hi[0]), np.deg2rad(lo_hi[1])


POSE_MODES = ("mixed", "counting")
# Counting k on one hand: index, middle, ring, pinky, then the thumb are extended.
_COUNT_ORDER = (1, 2, 3, 4, 0)


def sample_pose(rng: np.random.Generator, mode: str = "mixed") -> HandPose:
    """Draw joint angles within anatomical limits.

    Each finger's curl c in [0, 1] couples its three joints like real tendons do, then
    independent noise is added and every angle is clipped to its limit.

    Args:
        rng: random source.
        mode: 'mixed' mixes independent per-finger curls with gestures (fist, pointing,
            open hand, any subset of fingers extended) and relaxed hands; 'counting'
            shows 0-5 extended fingers in counting order (STB's Counting sequences).
    """
    if mode not in POSE_MODES:
        raise ValueError(f"pose mode must be one of {POSE_MODES}, got {mode!r}")
    kind = "counting" if mode == "counting" else rng.choice(
        ["independent", "gesture", "relaxed", "open"], p=[0.35, 0.35, 0.2, 0.1])
    if kind == "independent":
        curl = rng.uniform(0.0, 1.0, size=5)
    elif kind == "gesture":
        extended = rng.random(5) < rng.uniform(0.2, 0.8)
        curl = np.where(extended, rng.uniform(0.0, 0.2, 5), rng.uniform(0.7, 1.0, 5))
    elif kind == "counting":
        extended = np.zeros(5, dtype=bool)
        extended[list(_COUNT_ORDER[: int(rng.integers(0, 6))])] = True
        curl = np.where(extended, rng.uniform(0.0, 0.15, 5), rng.uniform(0.75, 1.0, 5))
    elif kind == "relaxed":
        curl = np.clip(rng.uniform(0.1, 0.5) + rng.normal(0.0, 0.1, 5), 0.0, 1.0)
    else:
        curl = rng.uniform(0.0, 0.12, size=5)

    flex = np.zeros((5, 3))
    abduction = np.zeros(5)
    # Fingers: MCP, PIP, DIP flexion follow the curl with noise.
    for i in range(1, 5):
        c = curl[i]
        flex[i, 0] = np.deg2rad(85.0 * c + rng.normal(0.0, 10.0) - 5.0)
        flex[i, 1] = np.deg2rad(105.0 * c + rng.normal(0.0, 8.0))
        flex[i, 2] = 0.7 * flex[i, 1] + np.deg2rad(rng.normal(0.0, 8.0))
        flex[i, 0] = np.clip(flex[i, 0], *_deg(MCP_FLEX_DEG))
        flex[i, 1] = np.clip(flex[i, 1], *_deg(PIP_FLEX_DEG))
        flex[i, 2] = np.clip(flex[i, 2], *_deg(DIP_FLEX_DEG))
    # Spread shrinks as fingers curl (the collateral ligaments tighten).
    spread = rng.uniform(-0.3, 1.0)
    for i in range(1, 5):
        direction = (2.5 - i) / 1.5  # index +1 .. pinky -1
        abd = 12.0 * spread * direction * (1.0 - 0.7 * curl[i]) + rng.normal(0.0, 3.0)
        abduction[i] = np.clip(np.deg2rad(abd), *_deg(FINGER_ABDUCTION_DEG))
    # Thumb: a curled thumb is also opposed (moved across the palm).
    c = curl[0]
    abduction[0] = np.clip(np.deg2rad(rng.uniform(15.0, 60.0) + 10.0 * (1 - c)),
                           *_deg(THUMB_ABDUCTION_DEG))
    flex[0, 0] = np.clip(np.deg2rad(70.0 * c + rng.normal(0.0, 12.0)), *_deg(THUMB_OPPOSITION_DEG))
    flex[0, 1] = np.clip(np.deg2rad(45.0 * c + rng.normal(0.0, 10.0)), *_deg(THUMB_MCP_FLEX_DEG))
    flex[0, 2] = np.clip(np.deg2rad(65.0 * c + rng.normal(0.0, 12.0)), *_deg(THUMB_IP_FLEX_DEG))
    return HandPose(flex=flex, abduction=abduction)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class PosedHand:
    """A posed hand in its hand frame.

    Attributes:
        joints_m: (21, 3) canonical joints, metres.
        nail_normals: (5, 3) unit normal of each finger's nail (the back of the distal
            phalanx), thumb first.
        shape: the hand's proportions.
    """

    joints_m: np.ndarray
    nail_normals: np.ndarray
    shape: HandShape


def pose_hand(shape: HandShape, pose: HandPose, side: str) -> PosedHand:
    """Forward kinematics: joints (and nail directions) of a posed hand in its hand frame.

    Args:
        shape: proportions from `sample_shape`.
        pose: angles from `sample_pose`.
        side: 'left' or 'right' (a left hand is the right one mirrored in x).
    """
    if side not in HAND_SIDES:
        raise ValueError(f"hand side must be 'left' or 'right', got {side!r}")
    joints = np.zeros((NUM_JOINTS, 3))
    nails = np.zeros((5, 3))
    palm_normal = np.array([0.0, 0.0, 1.0])
    for i, finger in enumerate(FINGERS):
        ids = FINGER_JOINTS[finger]
        base = shape.base_m[i]
        joints[ids[0]] = base
        lengths = shape.phalanx_m[i]
        if finger == "thumb":
            a = pose.abduction[0]
            o = pose.flex[0, 0]
            in_plane = np.array([np.sin(a), np.cos(a), 0.0])
            forward = _unit(np.cos(o) * in_plane + np.sin(o) * palm_normal)
            # The thumb bends towards the little finger and the palm.
            bend = np.array([-1.0, 0.2, 0.6 + 0.6 * np.sin(o)])
            bend = _unit(bend - bend.dot(forward) * forward)
            angles = np.cumsum([0.0, pose.flex[0, 1], pose.flex[0, 2]])
        else:
            splay = np.deg2rad(_SPLAY_DEG[finger]) + pose.abduction[i]
            forward = np.array([np.sin(splay), np.cos(splay), 0.0])
            bend = palm_normal
            angles = np.cumsum(pose.flex[i])
        position = base
        for k in range(3):
            direction = np.cos(angles[k]) * forward + np.sin(angles[k]) * bend
            position = position + lengths[k] * direction
            joints[ids[k + 1]] = position
        # The nail faces away from the bending side, perpendicular to the distal phalanx.
        nails[i] = np.sin(angles[2]) * forward - np.cos(angles[2]) * bend
    if side == "left":
        joints[:, 0] *= -1.0
        nails[:, 0] *= -1.0
    return PosedHand(joints_m=joints, nail_normals=nails, shape=shape)


def forward_kinematics(shape: HandShape, pose: HandPose, side: str) -> np.ndarray:
    """(21, 3) float64 joints in metres, canonical order, hand frame (see `pose_hand`)."""
    return pose_hand(shape, pose, side).joints_m


def sample_hand(rng: np.random.Generator, side: str) -> PosedHand:
    """A random posed hand of a random person."""
    shape = sample_shape(rng)
    pose = sample_pose(rng)
    return pose_hand(shape, pose, side)
