import numpy as np
import scipy.io as sio

from datasets import stb_calibration as calib
from utils.geometry import intrinsics, project_points, rodrigues


def test_project_points_by_hand():
    K = intrinsics(100.0, 200.0, 10.0, 20.0)
    uv = project_points(K, np.array([[1.0, 2.0, 4.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(uv, [[10 + 25.0, 20 + 100.0], [10.0, 20.0]])
    batched = project_points(np.stack([K, K]), np.zeros((2, 5, 3)) + [0, 0, 1])
    assert batched.shape == (2, 5, 2)


def test_rodrigues_matches_known_rotation():
    R = rodrigues(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    R = rodrigues(np.array([0.3, -0.2, 0.5]))
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


def test_sk_calibration_round_trip():
    xyz = np.random.default_rng(0).normal(size=(7, 3)) * 50 + [0, 0, 500]
    np.testing.assert_allclose(calib.sk_depth_to_color(calib.sk_color_to_depth(xyz)), xyz)


def test_real_stb_bb_projects_into_image(realdata):
    para = sio.loadmat(realdata / "STB/labels/B1Counting_BB.mat")["handPara"]
    xyz = para[:, :, 0].T  # (21, 3) mm, left camera
    for cam_xyz in (xyz, calib.bb_left_to_right(xyz)):
        uv = project_points(calib.BB_K, cam_xyz)
        assert np.all((uv > 0) & (uv < [640, 480]))
