"""The OpenCV mesh drawing (coverage, depth order, shading), the side view and .obj files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from manopth.synthetic_model import synthetic_mano_model
from utils.mesh_render import (
    draw_mesh,
    face_normals,
    mesh_panels,
    mirror_mesh_x,
    read_obj,
    side_view,
    write_obj,
)
from utils.vis import VisSample, render_grid


def _square(z: float, x0: float, size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two triangles forming a square facing the camera at depth z (1 px = 1 cm)."""
    px = np.array([[x0, x0], [x0 + size, x0], [x0 + size, x0 + size], [x0, x0 + size]])
    verts = np.concatenate([(px - 17.5) / 100.0, np.full((4, 1), z)], axis=1)  # near the axis
    return px, verts, np.array([[0, 1, 2], [0, 2, 3]])


def test_draw_mesh_covers_its_triangles_only() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    px, verts, faces = _square(1.0, 10.0, 15.0)
    out = draw_mesh(image, px, verts, faces, color=(200, 100, 50), alpha=1.0)
    assert out[17, 17].tolist() == [200, 100, 50]  # head-on: full shade
    assert out[5, 5].tolist() == [0, 0, 0] and out[30, 30].tolist() == [0, 0, 0]
    assert image.max() == 0  # the input is not modified
    half = draw_mesh(image, px, verts, faces, color=(200, 100, 50), alpha=0.5)
    assert half[17, 17].tolist() == [100, 50, 25]


def test_nearer_faces_are_drawn_last() -> None:
    image = np.zeros((40, 40, 3), np.uint8)
    far_px, far_v, faces = _square(2.0, 5.0, 20.0)
    near_px, near_v, _ = _square(1.0, 15.0, 20.0)
    px = np.concatenate([near_px, far_px])  # near first in the arrays: order must not matter
    verts = np.concatenate([near_v, far_v])
    faces2 = np.concatenate([faces, faces + 4])
    colours = []
    for order in (faces2, faces2[::-1]):
        out = draw_mesh(image, px, verts, order, alpha=1.0, color=(255, 255, 255))
        colours.append(out[20, 20].tolist())
    assert colours[0] == colours[1]
    # Shading: an edge-on face is darker than a head-on one.
    tilted = far_v.copy()
    tilted[:, 2] = 2.0 + far_v[:, 0] * 3.0  # strongly inclined about the y axis
    lit = draw_mesh(image, far_px, far_v, faces, alpha=1.0, color=(255, 255, 255))[15, 15, 0]
    dim = draw_mesh(image, far_px, tilted, faces, alpha=1.0, color=(255, 255, 255))[15, 15, 0]
    assert dim < lit


def test_mano_mesh_normals_and_panels() -> None:
    model = synthetic_mano_model("right")
    verts = model.v_template + np.array([0.0, 0.1, 0.5])
    normals = face_normals(verts, model.faces)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    K = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]])
    uvw = verts @ K.T
    verts_px = uvw[:, :2] / uvw[:, 2:]
    crop = np.full((256, 256, 3), 40, np.uint8)
    joints = np.random.default_rng(0).normal(size=(21, 3)) * 0.03
    panels = mesh_panels(crop, verts_px, verts, model.faces, joints, gt_joints_m=joints + 0.01,
                         note="synthetic stand-in, NOT MANO")
    assert [p.shape for p in panels] == [(256, 256, 3), (256, 256, 3)]
    assert (panels[0] != 40).any(axis=2).mean() > 0.05  # the hand covers part of the crop
    sample = VisSample(image_rgb=crop, kp2d_pred_px=np.full((21, 2), 100.0),
                       heatmaps=np.zeros((21, 64, 64)), extra_panels=panels)
    plain = VisSample(image_rgb=crop, kp2d_pred_px=np.full((21, 2), 100.0),
                      heatmaps=np.zeros((21, 64, 64)))
    assert render_grid([sample, plain]).shape == (2 * 256 + 2, 8 * 256, 3)
    with pytest.raises(ValueError, match="joints"):
        side_view(np.zeros((16, 3)))


def test_obj_round_trip_and_mirror(tmp_path: Path) -> None:
    model = synthetic_mano_model("right")
    path = write_obj(tmp_path / "hand.obj", model.v_template, model.faces,
                     comment="a test\nsecond line")
    text = path.read_text().splitlines()
    assert text[:2] == ["# a test", "# second line"]
    verts, faces = read_obj(path)
    np.testing.assert_allclose(verts, model.v_template, atol=1e-6)
    np.testing.assert_array_equal(faces, model.faces)
    assert min(int(t.split()[1]) for t in text if t.startswith("f ")) == 1  # 1-based
    mirrored, mfaces = mirror_mesh_x(model.v_template, model.faces)
    np.testing.assert_allclose(mirrored[:, 0], -model.v_template[:, 0])
    # Mirroring flips x and the winding: the normals stay outward, mirrored.
    np.testing.assert_allclose(face_normals(mirrored, mfaces)[:, 1:],
                               face_normals(model.v_template, model.faces)[:, 1:], atol=1e-9)
    with pytest.raises(ValueError, match="outside"):
        write_obj(tmp_path / "bad.obj", model.v_template[:10], model.faces)
    assert not list(tmp_path.glob(".bad.obj*"))
