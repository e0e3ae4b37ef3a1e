"""The one hand-joint convention of 2DHandFlow.

Every array of hand joints inside the project is in the canonical 21-joint order below
(FreiHAND's, MediaPipe's and BiHand's internal order). Readers convert once, with the
reorder tables here, as ``joints_canonical = joints_source[..., SOURCE_TO_CANONICAL, :]``.

    0 wrist
    1-4   thumb  (CMC, MCP, IP, tip)
    5-8   index  (MCP, PIP, DIP, tip)
    9-12  middle (MCP, PIP, DIP, tip)
    13-16 ring   (MCP, PIP, DIP, tip)
    17-20 pinky  (MCP, PIP, DIP, tip)
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 21

FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")

JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip

# Joint ids of each finger, from the palm outwards.
FINGER_JOINTS: dict[str, tuple[int, int, int, int]] = {
    finger: tuple(range(1 + 4 * i, 5 + 4 * i)) for i, finger in enumerate(FINGERS)
}

# Parent of each joint in the kinematic tree (-1 for the wrist, the root).
PARENTS: tuple[int, ...] = (-1,) + tuple(
    0 if j % 4 == 1 else j - 1 for j in range(1, NUM_JOINTS)
)

# The 20 bones as (parent, child) pairs.
BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, NUM_JOINTS))

# RGB colour per finger for drawing (palm joints and bones take their finger's colour).
FINGER_COLORS_RGB: dict[str, tuple[int, int, int]] = {
    "thumb": (230, 57, 70),
    "index": (244, 162, 97),
    "middle": (42, 157, 143),
    "ring": (69, 123, 157),
    "pinky": (155, 93, 229),
}
WRIST_COLOR_RGB: tuple[int, int, int] = (240, 240, 240)


def joint_finger(joint: int) -> str | None:
    """Name of the finger a canonical joint belongs to, or None for the wrist."""
    if not 0 <= joint < NUM_JOINTS:
        raise ValueError(f"joint id must be in [0, {NUM_JOINTS}), got {joint}")
    return None if joint == 0 else FINGERS[(joint - 1) // 4]


def joint_color_rgb(joint: int) -> tuple[int, int, int]:
    """Drawing colour of a canonical joint (and of the bone ending at it)."""
    finger = joint_finger(joint)
    return WRIST_COLOR_RGB if finger is None else FINGER_COLORS_RGB[finger]


# --- Reorder tables: canonical[i] = source[TABLE[i]] -------------------------------------

# RHD, per hand: 0 wrist, then thumb, index, middle, ring, pinky, each listed tip -> MCP.
# Rows 0-20 of RHD's 42 are the left hand, rows 21-41 the right hand.
RHD_TO_CANONICAL: tuple[int, ...] = (0,) + tuple(
    j for base in range(1, NUM_JOINTS, 4) for j in (base + 3, base + 2, base + 1, base)
)
RHD_LEFT_ROWS = slice(0, 21)
RHD_RIGHT_ROWS = slice(21, 42)

# STB: 0 palm centre, then pinky, ring, middle, index, thumb, each MCP -> tip.
# Canonical row 0 then holds the palm centre; convert it with `stb_palm_to_wrist`.
STB_TO_CANONICAL: tuple[int, ...] = (0, 17, 18, 19, 20, 13, 14, 15, 16, 9, 10, 11, 12,
                                     5, 6, 7, 8, 1, 2, 3, 4)  # fmt: skip

# MANO: 16 skeleton joints (0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring,
# 13-15 thumb), followed by the five fingertip vertices appended as 16-20 in the order
# thumb, index, middle, ring, pinky.
MANO_TO_CANONICAL: tuple[int, ...] = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18,
                                      10, 11, 12, 19, 7, 8, 9, 20)  # fmt: skip

# MediaPipe and FreiHAND already use the canonical order.
MEDIAPIPE_TO_CANONICAL: tuple[int, ...] = tuple(range(NUM_JOINTS))
FREIHAND_TO_CANONICAL: tuple[int, ...] = MEDIAPIPE_TO_CANONICAL


def invert_order(table: tuple[int, ...]) -> tuple[int, ...]:
    """Turn a source->canonical table into canonical->source (``source = canon[inv]``)."""
    inverse = [0] * len(table)
    for canonical_id, source_id in enumerate(table):
        inverse[source_id] = canonical_id
    return tuple(inverse)


def stb_palm_to_wrist(joints: np.ndarray, factor: float = 2.2) -> np.ndarray:
    """Replace STB's palm centre (canonical row 0) by an estimated wrist.

    BiHand's conversion: the wrist lies on the line from the middle-finger MCP through the
    palm centre, ``factor`` times as far from the MCP as the palm centre is.

    Args:
        joints: (..., 21, D) joints in canonical order whose row 0 is the palm centre.
        factor: distance ratio wrist/palm-centre, measured from the middle MCP.

    Returns:
        A copy with row 0 replaced by the wrist.
    """
    if joints.shape[-2] != NUM_JOINTS:
        raise ValueError(f"expected (..., {NUM_JOINTS}, D) joints, got shape {joints.shape}")
    out = np.array(joints, copy=True)
    middle_mcp = joints[..., FINGER_JOINTS["middle"][0], :]
    out[..., 0, :] = middle_mcp + factor * (joints[..., 0, :] - middle_mcp)
    return out
