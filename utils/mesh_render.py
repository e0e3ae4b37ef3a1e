"""Drawing a hand mesh with OpenCV only (no OpenGL, no opendr), a side view of a 3D skeleton,
and Wavefront .obj files.

`draw_mesh` is a painter's-algorithm rasteriser: triangles are sorted far to near by the mean
depth of their vertices and filled flat-shaded with ``cv2.fillConvexPoly`` (sub-pixel
coordinates, anti-aliased), then the mesh layer is alpha-blended over the image. The shade
of a face is ``ambient + (1 - ambient) |n . v|`` with ``n`` its unit normal and ``v`` the
viewing direction (towards the camera), so faces seen edge-on are darker. Images are RGB
uint8 (H, W, 3), as in `utils.vis`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from utils.atomic import write_text_atomic
from utils.geometry import rescale_px
from utils.joints import NUM_JOINTS
from utils.vis import draw_skeleton, put_label

MESH_RGB = (120, 170, 255)
_SHIFT = 4  # fractional bits of OpenCV's fixed-point coordinates


def face_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals of triangles ``faces`` (F, 3) over ``verts`` (V, 3)."""
    tri = np.asarray(verts, np.float64)[np.asarray(faces)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12)


def draw_mesh(image_rgb: np.ndarray, verts_px: np.ndarray, verts_m: np.ndarray,
              faces: np.ndarray, *, color: tuple[int, int, int] = MESH_RGB, alpha: float = 0.7,
              ambient: float = 0.3) -> np.ndarray:  # fmt: skip
    """The image with a flat-shaded, depth-sorted mesh blended over it.

    Args:
        image_rgb: (H, W, 3) uint8 image (not modified).
        verts_px: (V, 2) vertex positions in the image's pixels (OpenCV pixel centres).
        verts_m: (V, 3) the same vertices in 3D with +z away from the viewer (camera
            frame, or root-relative for a weak-perspective view): depth order and shading.
        faces: (F, 3) vertex indices.
        color: RGB of a face seen head-on.
        alpha: opacity of the mesh layer.
        ambient: shade of a face seen edge-on.

    Returns:
        A new (H, W, 3) uint8 image.
    """
    verts_px = np.asarray(verts_px, np.float64)
    verts_m = np.asarray(verts_m, np.float64)
    faces = np.asarray(faces, np.int64)
    if verts_px.shape != (verts_m.shape[0], 2) or verts_m.ndim != 2 or verts_m.shape[1] != 3:
        raise ValueError(f"expected verts_px (V, 2) and verts_m (V, 3), got {verts_px.shape} "
                         f"and {verts_m.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected faces (F, 3), got {faces.shape}")
    out = np.ascontiguousarray(image_rgb).copy()
    finite = np.isfinite(verts_px).all(axis=1) & np.isfinite(verts_m).all(axis=1)
    keep = finite[faces].all(axis=1)
    faces = faces[keep]
    if not faces.size:
        return out
    tri = verts_m[faces]  # (F, 3, 3)
    centre = tri.mean(axis=1)
    normals = face_normals(verts_m, faces)
    # The view ray towards the camera; a root-relative mesh (z around 0) is seen along -z.
    norm = np.linalg.norm(centre, axis=1, keepdims=True)
    view = np.where(centre[:, 2:] > 1e-3, -centre / np.maximum(norm, 1e-12), [[0.0, 0.0, -1.0]])
    shade = ambient + (1.0 - ambient) * np.abs((normals * view).sum(axis=1))
    layer = out.copy()
    covered = np.zeros(out.shape[:2], np.uint8)
    pts = np.round(np.clip(verts_px, -1e4, 1e4) * (1 << _SHIFT)).astype(np.int32)
    base = np.asarray(color, np.float64)
    for f in np.argsort(-centre[:, 2], kind="stable"):  # far to near
        poly = pts[faces[f]]
        fill = tuple(float(c) for c in np.clip(base * shade[f], 0, 255))
        cv2.fillConvexPoly(layer, poly, fill, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(covered, poly, 255, cv2.LINE_8, _SHIFT)
    mixed = cv2.addWeighted(layer, alpha, out, 1.0 - alpha, 0.0)
    mask = covered > 0
    out[mask] = mixed[mask]
    return out


def side_view(joints_m: np.ndarray, size_px: int = 256, *, gt_joints_m: np.ndarray | None = None,
              margin: float = 0.15) -> np.ndarray:  # fmt: skip
    """A side view of a 3D skeleton: the hand seen from the camera's +x side (the image's
    right), depth (z) running left to right and y down, orthographic, scaled to fit.

    Args:
        joints_m: (21, 3) joints (any origin; camera-frame axes).
        size_px: side of the square panel.
        gt_joints_m: (21, 3) ground truth drawn as white rings and thin lines, aligned on
            the prediction's wrist, or None.
        margin: fraction of the panel left around the skeletons.

    Returns:
        (size_px, size_px, 3) uint8 panel.
    """
    joints = np.asarray(joints_m, np.float64)
    if joints.shape != (NUM_JOINTS, 3):
        raise ValueError(f"expected joints ({NUM_JOINTS}, 3), got {joints.shape}")
    sets = [joints]
    gt = None
    if gt_joints_m is not None and np.isfinite(gt_joints_m).all():
        gt = np.asarray(gt_joints_m, np.float64) - gt_joints_m[0] + joints[0]
        sets.append(gt)
    pts = np.concatenate(sets)[:, [2, 1]]  # (z, y): depth to the right, y down
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = max(float((hi - lo).max()), 1e-3)
    scale = size_px * (1.0 - 2.0 * margin) / span
    centre = (lo + hi) / 2.0

    def to_px(j: np.ndarray) -> np.ndarray:
        return (j[:, [2, 1]] - centre) * scale + (size_px - 1) / 2.0

    panel = np.full((size_px, size_px, 3), 30, np.uint8)
    if gt is not None:
        panel = draw_skeleton(panel, to_px(gt), thickness=1, radius=2, hollow=True,
                              joint_colors=np.full((NUM_JOINTS, 3), 255, np.uint8))
    panel = draw_skeleton(panel, to_px(joints), thickness=2, radius=3)
    put_label(panel, "side view (from +x): depth ->")
    if gt is not None:
        put_label(panel, "rings: ground truth", row=1)
    return panel


def mesh_panels(crop_rgb: np.ndarray, verts2d_px: np.ndarray, verts_m: np.ndarray,
                faces: np.ndarray, joints_m: np.ndarray, *, kp2d_px: np.ndarray | None = None,
                gt_joints_m: np.ndarray | None = None, size_px: int = 256,
                note: str | None = None) -> list[np.ndarray]:  # fmt: skip
    """The two MANO panels of an evaluation row: the mesh over the crop, and a side view.

    Args:
        crop_rgb: (S, S, 3) uint8 crop the vertices are projected into.
        verts2d_px: (778, 2) projected vertices in the crop's pixels.
        verts_m: (778, 3) vertices (depth order, shading).
        faces: (F, 3) mesh faces.
        joints_m: (21, 3) the head's joints (side view).
        kp2d_px: (21, 2) projected joints in crop pixels, drawn thin over the mesh, or None.
        gt_joints_m: (21, 3) ground-truth joints for the side view, or None.
        size_px: panel side.
        note: a second label line (e.g. that the model is the stand-in, not MANO).
    """
    crop = np.ascontiguousarray(crop_rgb)
    scale = size_px / crop.shape[1]
    if crop.shape[:2] != (size_px, size_px):
        crop = cv2.resize(crop, (size_px, size_px), interpolation=cv2.INTER_LINEAR)

    def to_panel(px: np.ndarray) -> np.ndarray:
        return rescale_px(px, scale)

    mesh = draw_mesh(crop, to_panel(verts2d_px), verts_m, faces)
    if kp2d_px is not None:
        mesh = draw_skeleton(mesh, to_panel(kp2d_px), thickness=1, radius=2)
    put_label(mesh, "MANO mesh (projected)")
    if note:
        put_label(mesh, note, row=1)
    side = side_view(joints_m, size_px, gt_joints_m=gt_joints_m)
    return [mesh, side]


def write_obj(path: str | Path, verts_m: np.ndarray, faces: np.ndarray,
              comment: str | None = None) -> Path:  # fmt: skip
    """Write a triangle mesh as a Wavefront .obj (metres; faces 1-based), atomically.

    Args:
        path: the .obj file.
        verts_m: (V, 3) vertices.
        faces: (F, 3) 0-based vertex indices.
        comment: a line written as ``# comment`` at the top (e.g. which hand model).
    """
    verts = np.asarray(verts_m, np.float64)
    faces = np.asarray(faces, np.int64)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected verts (V, 3) and faces (F, 3), got {verts.shape} and "
                         f"{faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"faces index outside the {len(verts)} vertices")
    lines = [] if comment is None else [f"# {line}" for line in comment.splitlines()]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return write_text_atomic(path, "\n".join(lines) + "\n")


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(verts (V, 3), faces (F, 3) 0-based) of a triangle .obj written by `write_obj`."""
    verts, faces = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if parts[0] == "v":
            verts.append([float(v) for v in parts[1:4]])
        elif parts[0] == "f":
            faces.append([int(v.split("/")[0]) - 1 for v in parts[1:4]])
    return np.array(verts, np.float64).reshape(-1, 3), np.array(faces, np.int64).reshape(-1, 3)


def mirror_mesh_x(verts_m: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A mesh mirrored in x (a right hand made left) with its face winding reversed so that
    normals keep pointing outwards."""
    verts = np.asarray(verts_m, np.float64).copy()
    verts[..., 0] *= -1.0
    return verts, np.asarray(faces)[:, ::-1].copy()


__all__ = ["draw_mesh", "face_normals", "mirror_mesh_x", "read_obj", "side_view", "write_obj"]
