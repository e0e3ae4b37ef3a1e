"""A synthetic hand model in the MANO file format, for users (and tests) without MANO.

The real MANO files are licensed and cannot ship with the project. This module builds a
model with MANO's exact structure and plausible hand geometry, so the layer, the fitting
routine and the RHD fitting demo run without them:

* 778 vertices and 1538 faces forming one oriented, manifold, genus-0 surface with a
  16-edge hole at the wrist (MANO's numbers satisfy the same Euler count);
* MANO's 16-joint tree (0 wrist, 1-3 index, 4-6 middle, 7-9 pinky, 10-12 ring,
  13-15 thumb) with a sparse ``J_regressor`` whose rows sum to 1 (each joint is the centre
  of a vertex ring) and skinning ``weights`` whose rows sum to 1;
* fingertip apex vertices at MANO's tip ids (thumb 745, index 317, middle 444, ring 556,
  pinky 673), so `ManoLayer`'s default fingertips work;
* 10 shape blend shapes (size, finger length, palm width, thickness and smooth extras),
  135 pose blend shapes, an orthonormal 45x45 pose PCA basis whose first component curls
  all fingers, and a slightly curled ``hands_mean``.

Units are metres. In the rest pose the fingers point along -y, the palm faces -z and, for
the right hand, the thumb is on the +x side (the left hand is the mirror image in x).

Two file styles are written: ``'chumpy'``, a Python-2-style protocol-2 pickle like the
originals (arrays as chumpy ``Ch``/``Select`` objects, ``J_regressor`` as a
``scipy.sparse.csc.csc_matrix``, strings as byte strings that need ``encoding='latin1'``),
emitted opcode by opcode with the chumpy names and no chumpy; and ``'numpy'``, a plain
pickle of numpy arrays and a scipy sparse matrix like the "cleaned" copies users make.

CLI: ``python -m manopth.synthetic_model --out DIR [--style chumpy|numpy] [--seed S]``
writes ``DIR/MANO_RIGHT.pkl`` and ``DIR/MANO_LEFT.pkl``.
"""

from __future__ import annotations

import argparse
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from manopth.loader import (
    NUM_FACES,
    NUM_MANO_JOINTS,
    NUM_VERTS,
    SIDES,
    ManoModel,
    mano_model_from_arrays,
)
from utils.atomic import write_bytes_atomic

# MANO's fingertip vertex ids, in the order thumb, index, middle, ring, pinky.
TIP_VERTEX_IDS: tuple[int, int, int, int, int] = (745, 317, 444, 556, 673)

MANO_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)

_RING = 8  # vertices per finger ring
_WRIST = 16  # vertices of the wrist ring (= the boundary of the mesh)
_PALM_RINGS = 6  # palm rings of 4 * _RING vertices, the last one made of the finger bases


@dataclass(frozen=True)
class _Finger:
    name: str
    joints: tuple[int, int, int]  # MANO joint ids, palm outwards
    tip_id: int  # vertex id of the apex
    segments_m: tuple[float, float, float]  # bone lengths, palm outwards
    radius_m: float
    rings: tuple[int, int, int]  # vertex rings per segment (the last one's end at a joint)


_FINGERS: tuple[_Finger, ...] = (
    _Finger("index", (1, 2, 3), 317, (0.040, 0.024, 0.020), 0.0093, (5, 5, 5)),
    _Finger("middle", (4, 5, 6), 444, (0.044, 0.027, 0.021), 0.0096, (6, 5, 5)),
    _Finger("ring", (10, 11, 12), 556, (0.041, 0.026, 0.021), 0.0090, (5, 5, 5)),
    _Finger("pinky", (7, 8, 9), 673, (0.032, 0.019, 0.018), 0.0080, (4, 4, 4)),
    _Finger("thumb", (13, 14, 15), 745, (0.042, 0.032, 0.027), 0.0105, (4, 4, 4)),
)
_FINGER_X_M = {"index": 0.031, "middle": 0.010, "ring": -0.0105, "pinky": -0.030}
_PALM_LENGTH_M = 0.088
_BLEND_M = 0.006  # half-width of the skinning blend zone around a joint


class _MeshBuilder:
    """Collects vertices, triangles and per-vertex skinning/axial data."""

    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.faces: list[tuple[int, int, int]] = []
        # Per vertex: (finger index or -1 for the palm, distance along the finger axis).
        self.finger_of: list[int] = []
        self.axial_m: list[float] = []

    def add(self, xyz: np.ndarray, finger: int = -1, axial: float = 0.0) -> int:
        self.verts.append(np.asarray(xyz, dtype=np.float64))
        self.finger_of.append(finger)
        self.axial_m.append(axial)
        return len(self.verts) - 1

    def quad(self, a0: int, a1: int, b1: int, b0: int) -> None:
        """Two triangles of the quad a0 -> a1 -> b1 -> b0 (a: lower loop, b: upper loop)."""
        self.faces += [(a0, a1, b1), (a0, b1, b0)]

    def quad_with_centre(self, a0: int, a1: int, b1: int, b0: int, bulge: np.ndarray) -> None:
        """Four triangles around a new centre vertex (moved by ``bulge``)."""
        loop = (a0, a1, b1, b0)
        centre = np.mean([self.verts[i] for i in loop], axis=0) + bulge
        c = self.add(centre)
        for i in range(4):
            self.faces.append((loop[i], loop[(i + 1) % 4], c))

    def strip(self, lower: list[int], upper: list[int]) -> None:
        """Quads between two loops of equal length with the same orientation."""
        n = len(lower)
        for i in range(n):
            j = (i + 1) % n
            self.quad(lower[i], lower[j], upper[j], upper[i])


def _frame(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``axis`` and each other (u close to +x)."""
    u = np.array([1.0, 0.0, 0.0]) - axis * axis[0]
    u /= np.linalg.norm(u)
    return u, np.cross(axis, u)


def _finger_rings_axial(finger: _Finger) -> list[float]:
    """Axial positions of a finger's rings beyond the base, with rings exactly at joints."""
    positions: list[float] = []
    start = 0.0
    tip_cap = 0.55 * finger.radius_m
    for k, (length, count) in enumerate(zip(finger.segments_m, finger.rings, strict=True)):
        usable = length - tip_cap if k == 2 else length
        positions += [start + usable * m / count for m in range(1, count + 1)]
        start += length
    return positions


def _radius_at(finger: _Finger, axial: float) -> float:
    total = sum(finger.segments_m)
    return finger.radius_m * (1.0 - 0.22 * axial / total)


def _build_geometry() -> tuple[_MeshBuilder, dict[str, dict[str, Any]]]:
    """The right-hand template mesh before vertex reordering."""
    mesh = _MeshBuilder()
    angles = 2 * np.pi * (np.arange(_RING) + 0.5) / _RING  # ring vertex angles about the axis
    up = np.array([0.0, -1.0, 0.0])
    info: dict[str, dict[str, Any]] = {}

    # Finger base rings at the top of the palm: the palm's last ring is made of them.
    long_fingers = [f for f in _FINGERS if f.name != "thumb"]
    base_xyz: dict[str, np.ndarray] = {}
    for f in long_fingers:
        centre = np.array([_FINGER_X_M[f.name], -_PALM_LENGTH_M, 0.0])
        base_xyz[f.name] = centre + f.radius_m * np.stack(
            [np.cos(angles), np.zeros(_RING), np.sin(angles)], axis=1
        )
    # Palm top loop: back halves (z > 0) with x decreasing, then front halves with x increasing.
    half = _RING // 2
    top_order = [(f.name, k) for f in long_fingers for k in range(half)]
    top_order += [(f.name, k) for f in reversed(long_fingers) for k in range(half, _RING)]
    top_xyz = np.stack([base_xyz[name][k] for name, k in top_order])  # (32, 3)

    # Wrist ring: every other top-loop vertex's direction, on a smaller ellipse at y = 0.
    top_dir = top_xyz[:, [0, 2]] - top_xyz[:, [0, 2]].mean(0)
    top_angle = np.arctan2(top_dir[:, 1] / 0.012, top_dir[:, 0] / 0.04)
    wrist_half_w, wrist_half_t = 0.029, 0.014

    def ellipse(angle: np.ndarray, y: float, half_w: float, half_t: float) -> np.ndarray:
        return np.stack([half_w * np.cos(angle), np.full_like(angle, y), half_t * np.sin(angle)], 1)

    wrist = [mesh.add(p) for p in ellipse(top_angle[::2], 0.0, wrist_half_w, wrist_half_t)]
    palm_rings: list[list[int]] = []
    for r in range(_PALM_RINGS - 1):
        t = (r + 1) / _PALM_RINGS
        y = -_PALM_LENGTH_M * t
        # Wide, thick palm below; blend into the finger bases towards the top.
        width = 0.038 + 0.006 * np.sin(np.pi * t)
        thick = 0.016 - 0.004 * t
        lower = ellipse(top_angle, y, width, thick)
        blend = t**3
        pts = (1 - blend) * lower + blend * np.column_stack(
            [top_xyz[:, 0], np.full(len(top_xyz), y), top_xyz[:, 2]]
        )
        palm_rings.append([mesh.add(p) for p in pts])
    top_ids: dict[tuple[str, int], int] = {}
    top_ring = []
    for (name, k), p in zip(top_order, top_xyz, strict=True):
        finger_idx = next(i for i, f in enumerate(_FINGERS) if f.name == name)
        top_ids[(name, k)] = mesh.add(p, finger_idx, 0.0)
        top_ring.append(top_ids[(name, k)])
    palm_rings.append(top_ring)

    # Wrist (16) -> first palm ring (32): three triangles per wrist edge.
    first = palm_rings[0]
    for j in range(_WRIST):
        w0, w1 = wrist[j], wrist[(j + 1) % _WRIST]
        p0, p1, p2 = first[2 * j], first[2 * j + 1], first[(2 * j + 2) % len(first)]
        mesh.faces += [(w0, p1, p0), (w0, w1, p1), (w1, p2, p1)]

    # Palm wall, leaving a 3-quad hole for the thumb on the +x side of ring 1 -> 2.
    n_top = len(top_ring)
    thumb_row, thumb_cols = 1, [n_top - 2, n_top - 1, 0]
    palm_side_bulges = {(3, 19): 0.004, (3, 20): 0.004}  # two thenar-side vertices on the palm
    for r in range(_PALM_RINGS - 1):
        lower, upper = palm_rings[r], palm_rings[r + 1]
        for i in range(n_top):
            if r == thumb_row and i in thumb_cols:
                continue
            j = (i + 1) % n_top
            if (r, i) in palm_side_bulges:
                bulge = np.array([0.0, 0.0, -palm_side_bulges[(r, i)]])
                mesh.quad_with_centre(lower[i], lower[j], upper[j], upper[i], bulge)
            else:
                mesh.quad(lower[i], lower[j], upper[j], upper[i])

    # Webbing between neighbouring long fingers, each quad around a centre vertex.
    for a, b in zip(long_fingers[:-1], long_fingers[1:], strict=True):
        loop = (top_ids[(a.name, half - 1)], top_ids[(b.name, 0)],
                top_ids[(b.name, _RING - 1)], top_ids[(a.name, half)])
        mesh.quad_with_centre(*loop, bulge=np.array([0.0, 0.002, 0.0]))

    # Fingers: tubes of rings along their axis, closed by an apex vertex.
    wrist_centre = np.zeros(3)
    for fi, f in enumerate(_FINGERS):
        if f.name == "thumb":
            lo, hi = palm_rings[thumb_row], palm_rings[thumb_row + 1]
            cols = thumb_cols + [(thumb_cols[-1] + 1) % n_top]
            base = [lo[c] for c in cols] + [hi[c] for c in reversed(cols)]
            base_pts = np.stack([mesh.verts[i] for i in base])
            base_centre = base_pts.mean(0)
            axis = np.array([0.6, -0.7, -0.4])
            axis /= np.linalg.norm(axis)
            u, v = _frame(axis)
            rel = base_pts - base_centre
            ring_angles = np.arctan2(rel @ v, rel @ u)
            for i in base:
                mesh.finger_of[i] = fi
        else:
            base = [top_ids[(f.name, k)] for k in range(_RING)]
            base_centre = np.array([_FINGER_X_M[f.name], -_PALM_LENGTH_M, 0.0])
            axis, (u, v), ring_angles = up, (np.array([1.0, 0, 0]), np.array([0, 0, 1.0])), angles
        prev = base
        for s in _finger_rings_axial(f):
            r = _radius_at(f, s)
            centre = base_centre + s * axis
            ring = [mesh.add(centre + r * (np.cos(a) * u + np.sin(a) * v), fi, s)
                    for a in ring_angles]
            mesh.strip(prev, ring)
            prev = ring
        tip = mesh.add(base_centre + sum(f.segments_m) * axis, fi, sum(f.segments_m))
        for i in range(_RING):
            mesh.faces.append((prev[i], prev[(i + 1) % _RING], tip))
        info[f.name] = {"base": base, "base_centre": base_centre, "axis": axis, "tip": tip,
                        "index": fi}
    info["wrist"] = {"ring": wrist, "centre": wrist_centre}
    return mesh, info


def _skinning_weights(mesh: _MeshBuilder) -> np.ndarray:
    """(V, 16) weights: the palm follows the wrist, finger segments their joint, blended."""
    weights = np.zeros((len(mesh.verts), NUM_MANO_JOINTS))
    for v, (fi, s) in enumerate(zip(mesh.finger_of, mesh.axial_m, strict=True)):
        if fi < 0:
            weights[v, 0] = 1.0
            continue
        f = _FINGERS[fi]
        chain = (0, *f.joints)  # parent of the first segment is the wrist
        bounds = np.cumsum((0.0,) + f.segments_m[:2])  # joint positions along the axis
        seg = int(np.searchsorted(bounds, s, side="right")) - 1  # segment containing s
        weights[v, chain[seg + 1]] = 1.0
        for b, pos in enumerate(bounds):
            if abs(s - pos) < _BLEND_M:
                child = 0.5 + (s - pos) / (2 * _BLEND_M)
                weights[v] = 0.0
                weights[v, chain[b]] = 1.0 - child
                weights[v, chain[b + 1]] = child
    return weights


def _joint_regressor(mesh: _MeshBuilder, info: dict[str, dict[str, Any]]) -> np.ndarray:
    """(16, V): each joint is the mean of one vertex ring (rings sit exactly at the joints)."""
    reg = np.zeros((NUM_MANO_JOINTS, len(mesh.verts)))
    reg[0, info["wrist"]["ring"]] = 1.0 / _WRIST
    axial = np.asarray(mesh.axial_m)
    finger_of = np.asarray(mesh.finger_of)
    for f in _FINGERS:
        fi = info[f.name]["index"]
        reg[f.joints[0], info[f.name]["base"]] = 1.0 / _RING
        for joint, pos in zip(f.joints[1:], np.cumsum(f.segments_m[:2]), strict=True):
            ring = np.flatnonzero((finger_of == fi) & np.isclose(axial, pos))
            if len(ring) != _RING:
                raise RuntimeError(f"no vertex ring at {f.name} joint {joint}")
            reg[joint, ring] = 1.0 / _RING
    return reg


def _shape_dirs(verts: np.ndarray, mesh: _MeshBuilder, info: dict, rng: np.random.Generator
                ) -> np.ndarray:
    """(V, 3, 10) shape blend shapes in metres per unit beta."""
    n = len(verts)
    dirs = np.zeros((n, 3, 10))
    dirs[:, :, 0] = 0.03 * verts  # overall size about the wrist
    finger_of = np.asarray(mesh.finger_of)
    axial = np.asarray(mesh.axial_m)
    for f in _FINGERS:
        sel = finger_of == info[f.name]["index"]
        dirs[sel, :, 1] = 0.06 * axial[sel, None] * info[f.name]["axis"]  # finger length
        base_x = info[f.name]["base_centre"][0]
        dirs[sel, 0, 2] = 0.05 * base_x  # fingers follow the palm width
    dirs[finger_of < 0, 0, 2] = 0.05 * verts[finger_of < 0, 0]  # palm width
    dirs[finger_of < 0, 2, 3] = 0.08 * verts[finger_of < 0, 2]  # palm thickness
    # Smooth, small extras: low-frequency fields of the position.
    for k in range(4, 10):
        freq = rng.normal(scale=25.0, size=(3, 3))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        dirs[:, :, k] = 0.0015 * np.sin(verts @ freq + phase)
    return dirs


def _pose_dirs(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 135): each finger joint's (R - I) moves the vertices it and its parent skin."""
    dirs = np.zeros((weights.shape[0], 3, 9 * (NUM_MANO_JOINTS - 1)))
    for j in range(1, NUM_MANO_JOINTS):
        influence = weights[:, j] + weights[:, MANO_PARENTS[j]] * (weights[:, j] > 0)
        basis = rng.normal(scale=0.004, size=(3, 9))
        dirs[:, :, 9 * (j - 1):9 * j] = influence[:, None, None] * basis
    return dirs


def _flexion_axes(info: dict) -> np.ndarray:
    """(15, 3) per finger joint the axis that curls it towards the palm (MANO joint order)."""
    axes = np.zeros((NUM_MANO_JOINTS - 1, 3))
    palm_centre = np.array([0.0, -0.05, -0.02])
    for f in _FINGERS:
        d = info[f.name]["axis"]
        if f.name == "thumb":
            toward = palm_centre - info[f.name]["base_centre"]
            axis = np.cross(d, toward - (toward @ d) * d)
            axis /= np.linalg.norm(axis)
        else:
            axis = np.array([1.0, 0.0, 0.0])
        for j in f.joints:
            axes[j - 1] = axis
    return axes


def _pose_pca(info: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal (45, 45) components (rows), the first curling all fingers; the mean pose."""
    flex = _flexion_axes(info)
    curl = flex.reshape(-1)
    spread = np.zeros((NUM_MANO_JOINTS - 1, 3))
    for f in _FINGERS:
        spread[f.joints[0] - 1] = [0.0, 0.0, 1.0] if f.name != "thumb" else flex[f.joints[0] - 1]
    seeds = np.concatenate([curl[None], spread.reshape(1, -1), rng.normal(size=(43, 45))])
    q, r = np.linalg.qr(seeds.T)
    q = q * np.sign(np.diag(r))  # keep the first component pointing along +curl
    components = q.T
    mean = (0.12 * flex).reshape(-1)
    return components, mean


def synthetic_mano_arrays(side: str = "right", seed: int = 0) -> dict[str, Any]:
    """The arrays of the synthetic model under MANO's keys.

    Args:
        side: 'right' or 'left' (the mirror image of the right hand in x).
        seed: seeds the random parts (pose blend shapes, PCA extras, shape extras).

    Returns:
        A dict with v_template (778, 3), shapedirs (778, 3, 10), posedirs (778, 3, 135),
        J_regressor (scipy.sparse.csc_matrix (16, 778)), weights (778, 16),
        kintree_table (2, 16) int64, f (1538, 3) uint32, hands_components (45, 45),
        hands_mean (45,), J (16, 3) rest joints, bs_style 'lbs', bs_type 'lrotmin'.
    """
    if side not in SIDES:
        raise ValueError(f"hand side must be 'right' or 'left', got {side!r}")
    rng = np.random.default_rng(seed)
    mesh, info = _build_geometry()
    verts = np.stack(mesh.verts)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if verts.shape[0] != NUM_VERTS or faces.shape[0] != NUM_FACES:
        raise RuntimeError(f"synthetic mesh has {verts.shape[0]} vertices and "
                           f"{faces.shape[0]} faces, expected {NUM_VERTS} and {NUM_FACES}")
    weights = _skinning_weights(mesh)
    reg = _joint_regressor(mesh, info)
    shapedirs = _shape_dirs(verts, mesh, info, rng)
    posedirs = _pose_dirs(weights, rng)
    components, mean = _pose_pca(info, rng)

    # Move the fingertip apexes to MANO's tip vertex ids.
    tips_old = [info[name]["tip"] for name in ("thumb", "index", "middle", "ring", "pinky")]
    new_to_old = np.full(NUM_VERTS, -1)
    new_to_old[list(TIP_VERTEX_IDS)] = tips_old
    rest = [v for v in range(NUM_VERTS) if v not in set(tips_old)]
    new_to_old[new_to_old < 0] = rest
    old_to_new = np.argsort(new_to_old)
    verts, weights, shapedirs, posedirs = (a[new_to_old] for a in (verts, weights, shapedirs,
                                                                   posedirs))
    reg = reg[:, new_to_old]
    faces = old_to_new[faces]

    if side == "left":
        mirror = np.array([-1.0, 1.0, 1.0])
        verts = verts * mirror
        shapedirs = shapedirs * mirror[None, :, None]
        posedirs = posedirs * mirror[None, :, None]
        faces = faces[:, ::-1].copy()  # mirroring flips the orientation
    kintree = np.stack([np.array(MANO_PARENTS), np.arange(NUM_MANO_JOINTS)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # the originals store the root's parent as uint32 max
    return {
        "v_template": verts,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(reg),
        "weights": weights,
        "kintree_table": kintree,
        "f": faces.astype(np.uint32),
        "hands_components": components,
        "hands_mean": mean,
        "J": reg @ verts,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def synthetic_mano_model(side: str = "right", seed: int = 0) -> ManoModel:
    """The synthetic model as a validated `ManoModel` (no file involved)."""
    return mano_model_from_arrays(synthetic_mano_arrays(side, seed),
                                  source=f"<synthetic MANO {side}, seed {seed}>")


# --- Writing: a Python-2-style chumpy pickle, opcode by opcode -----------------------------


class _Py2PickleWriter:
    """Emits protocol-2 opcodes the way Python 2 wrote MANO files, naming chumpy/scipy/numpy
    globals by their old module paths without importing anything."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.out.write(pickle.PROTO + b"\x02")

    def glob(self, module: str, name: str) -> None:
        self.out.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))

    def bytestr(self, data: bytes) -> None:
        """A Python 2 ``str``: raw bytes that Python 3 must decode (``encoding='latin1'``)."""
        if len(data) < 256:
            self.out.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.out.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    def save(self, obj: Any) -> None:
        w = self.out.write
        if obj is None:
            w(pickle.NONE)
        elif isinstance(obj, bool):
            w(pickle.NEWTRUE if obj else pickle.NEWFALSE)
        elif isinstance(obj, int | np.integer):
            w(pickle.BININT + struct.pack("<i", int(obj)))
        elif isinstance(obj, float):
            w(pickle.BINFLOAT + struct.pack(">d", obj))
        elif isinstance(obj, str):
            self.bytestr(obj.encode("ascii"))
        elif isinstance(obj, tuple):
            w(pickle.MARK)
            for item in obj:
                self.save(item)
            w(pickle.TUPLE)
        elif isinstance(obj, list):
            w(pickle.EMPTY_LIST + pickle.MARK)
            for item in obj:
                self.save(item)
            w(pickle.APPENDS)
        elif isinstance(obj, dict):
            w(pickle.EMPTY_DICT + pickle.MARK)
            for key, value in obj.items():
                self.save(key)
                self.save(value)
            w(pickle.SETITEMS)
        elif isinstance(obj, set):
            self.glob("__builtin__", "set")
            self.save((sorted(obj),))
            w(pickle.REDUCE)
        elif isinstance(obj, np.ndarray):
            self.save_array(obj)
        elif isinstance(obj, _PickledObject):
            self.save_object(obj)
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} in a Python-2 MANO pickle")

    def save_array(self, array: np.ndarray) -> None:
        """``numpy.core.multiarray._reconstruct(ndarray, (0,), 'b')`` then its state."""
        w = self.out.write
        array = np.ascontiguousarray(array)
        self.glob("numpy.core.multiarray", "_reconstruct")
        w(pickle.MARK)
        self.glob("numpy", "ndarray")
        self.save((0,))
        self.save("b")
        w(pickle.TUPLE + pickle.REDUCE)
        w(pickle.MARK)
        self.save(1)
        self.save(tuple(int(n) for n in array.shape))
        self.save_dtype(array.dtype)
        self.save(False)
        self.bytestr(array.tobytes())
        w(pickle.TUPLE + pickle.BUILD)

    def save_dtype(self, dtype: np.dtype) -> None:
        w = self.out.write
        self.glob("numpy", "dtype")
        w(pickle.MARK)
        self.save(dtype.str[1:])
        self.save(0)
        self.save(1)
        w(pickle.TUPLE + pickle.REDUCE)
        self.save((3, dtype.str[0], None, None, None, -1, -1, 0))
        w(pickle.BUILD)

    def save_object(self, obj: _PickledObject) -> None:
        if obj.via_reconstructor:
            self.glob("copy_reg", "_reconstructor")
            self.out.write(pickle.MARK)
            self.glob(*obj.qualname)
            self.glob("__builtin__", "object")
            self.save(None)
            self.out.write(pickle.TUPLE + pickle.REDUCE)
        else:
            self.glob(*obj.qualname)
            self.out.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
        self.save(obj.state)
        self.out.write(pickle.BUILD)

    def getvalue(self) -> bytes:
        return self.out.getvalue() + pickle.STOP


@dataclass(frozen=True)
class _PickledObject:
    """An object of a class we do not have (chumpy, old scipy), by name and state."""

    qualname: tuple[str, str]
    state: dict[str, Any]
    via_reconstructor: bool = False


def _chumpy_state(**terms: Any) -> dict[str, Any]:
    """The __dict__ chumpy pickles (`Ch.__getstate__` drops _parents and _cache)."""
    state: dict[str, Any] = {"_dirty_vars": set(), "_itr": None, "_depends_on_deps": {},
                             "_make_dense": False, "_make_sparse": False}
    state.update(terms)
    return state


def _chumpy_ch(array: np.ndarray) -> _PickledObject:
    return _PickledObject(("chumpy.ch", "Ch"), _chumpy_state(x=np.asarray(array)))


def _chumpy_style(arrays: dict[str, Any]) -> dict[str, Any]:
    """MANO arrays wrapped the way the original files hold them."""
    reg = arrays["J_regressor"].tocsc()
    shapedirs = arrays["shapedirs"]
    out = dict(arrays)
    out["v_template"] = _chumpy_ch(arrays["v_template"])
    out["weights"] = _chumpy_ch(arrays["weights"])
    out["posedirs"] = _chumpy_ch(arrays["posedirs"])
    out["shapedirs"] = _PickledObject(
        ("chumpy.reordering", "Select"),
        _chumpy_state(a=_chumpy_ch(shapedirs.reshape(-1)), idxs=np.arange(shapedirs.size),
                      preferred_shape=shapedirs.shape),
        via_reconstructor=True,
    )
    out["J_regressor"] = _PickledObject(
        ("scipy.sparse.csc", "csc_matrix"),
        {"_shape": reg.shape, "maxprint": 50, "format": "csc", "data": reg.data,
         "indices": reg.indices.astype(np.int32), "indptr": reg.indptr.astype(np.int32),
         "_has_sorted_indices": True},
    )
    return out


def write_synthetic_mano(path: str | Path, side: str = "right", style: str = "chumpy",
                         seed: int = 0) -> Path:
    """Write the synthetic model of ``side`` to ``path`` in the given file ``style``.

    Args:
        path: the output file (conventionally ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl``).
        side: 'right' or 'left'.
        style: 'chumpy' (Python-2 protocol-2 pickle with chumpy objects, needs
            ``encoding='latin1'``) or 'numpy' (plain pickle of numpy/scipy objects).
        seed: see `synthetic_mano_arrays`.

    Returns:
        ``path``.
    """
    arrays = synthetic_mano_arrays(side, seed)
    if style == "chumpy":
        writer = _Py2PickleWriter()
        writer.save(_chumpy_style(arrays))
        data = writer.getvalue()
    elif style == "numpy":
        data = pickle.dumps(arrays, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        raise ValueError(f"style must be 'chumpy' or 'numpy', got {style!r}")
    path = Path(path)
    write_bytes_atomic(path, data)
    return path


def write_synthetic_mano_root(out_dir: str | Path, style: str = "chumpy", seed: int = 0
                              ) -> Path:
    """Write ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` into ``out_dir`` (a ``--mano_root``)."""
    out_dir = Path(out_dir)
    for side in SIDES:
        write_synthetic_mano(out_dir / f"MANO_{side.upper()}.pkl", side, style, seed)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write MANO_{RIGHT,LEFT}.pkl")
    parser.add_argument("--style", choices=("chumpy", "numpy"), default="chumpy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_synthetic_mano_root(args.out, args.style, args.seed)
    print(f"wrote synthetic MANO files ({args.style} style) to {out}")


if __name__ == "__main__":
    main()
