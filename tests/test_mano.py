"""MANO loading (both file styles, refusal of code), the synthetic model and the layer."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from manopth import lbs
from manopth.loader import ManoFileError, fix_left_shapedirs, load_mano, mano_model_path
from manopth.manolayer import ManoLayer
from manopth.projection import perspective_project, weak_perspective_project
from manopth.synthetic_model import (
    TIP_VERTEX_IDS,
    synthetic_mano_arrays,
    synthetic_mano_model,
    write_synthetic_mano,
)
from utils.joints import MANO_TO_CANONICAL, invert_order
from utils.safe_pickle import restricted_load

MANO_SKELETON = [invert_order(MANO_TO_CANONICAL)[j] for j in range(16)]  # canonical rows


@pytest.fixture(scope="module")
def model():
    return synthetic_mano_model("right")


@pytest.fixture(scope="module")
def mano_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mano")
    return {style: write_synthetic_mano(root / style / "MANO_RIGHT.pkl", "right", style)
            for style in ("chumpy", "numpy")}


# --- Loading ---------------------------------------------------------------------------


def test_both_file_styles_load_to_identical_arrays(mano_files, model):
    chumpy_style, numpy_style = load_mano(mano_files["chumpy"]), load_mano(mano_files["numpy"])
    for name in ("v_template", "shapedirs", "posedirs", "j_regressor", "weights", "faces",
                 "hands_components", "hands_mean"):
        np.testing.assert_array_equal(getattr(chumpy_style, name), getattr(numpy_style, name))
        np.testing.assert_array_equal(getattr(chumpy_style, name), getattr(model, name))
    assert chumpy_style.parents == numpy_style.parents == model.parents


def test_chumpy_style_file_is_python2_like(mano_files):
    data = mano_files["chumpy"].read_bytes()
    for name in (b"chumpy.ch\nCh", b"chumpy.reordering\nSelect", b"scipy.sparse.csc\ncsc_matrix",
                 b"copy_reg\n_reconstructor", b"numpy.core.multiarray\n_reconstruct"):
        assert name in data
    # Like the originals, the raw array bytes are Python 2 strings: ASCII decoding fails.
    with pytest.raises(pickle.UnpicklingError):
        restricted_load(mano_files["chumpy"], encoding="ASCII")



def test_pickle_that_runs_code_is_refused(tmp_path, code_running_object):
    path = tmp_path / "MANO_RIGHT.pkl"
    arrays = synthetic_mano_arrays()
    arrays["hands_mean"], marker = code_running_object
    path.write_bytes(pickle.dumps(arrays, protocol=2))
    with pytest.raises(ManoFileError, match=r"refus.*system.*mano\.is\.tue\.mpg\.de"):
        load_mano(path)
    assert not marker.exists()


def test_reconstructor_only_builds_stand_ins(tmp_path):
    # copy_reg._reconstructor(<admitted numpy class>, object, None) must not be honoured.
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(b"\x80\x02ccopy_reg\n_reconstructor\n(cnumpy\ndtype\nc__builtin__\nobject\n"
                     b"NtR.")
    with pytest.raises(ManoFileError, match="_reconstructor may only"):
        load_mano(path)


def test_unsupported_chumpy_nodes_are_refused_by_name(tmp_path):
    path = tmp_path / "MANO_RIGHT.pkl"
    # {'v_template': chumpy.ch_ops.add()} as Python 2 would write it.
    path.write_bytes(b"\x80\x02}q\x00U\nv_templateq\x01cchumpy.ch_ops\nadd\nq\x02)\x81q\x03"
                     b"}q\x04bs.")
    with pytest.raises(ManoFileError, match=r"chumpy\.ch_ops\.add"):
        load_mano(path)


def test_missing_and_wrong_files_say_what_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MANO_LEFT\.pkl.*mano\.is\.tue\.mpg\.de.*"
                                                r"--mano_root"):
        load_mano(mano_model_path("left", tmp_path))
    arrays = synthetic_mano_arrays()
    arrays["posedirs"] = arrays["posedirs"][..., :100]
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(arrays))
    with pytest.raises(ManoFileError, match=r"'posedirs' has shape \(778, 3, 100\), expected "
                                            r"\(778, 3, 135\).*mano\.is\.tue"):
        load_mano(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ManoFileError, match="not a dict"):
        load_mano(path)
    with pytest.raises(ValueError, match="side"):
        mano_model_path("middle")


# --- The synthetic model's structure -----------------------------------------------------


def test_synthetic_model_structure(model):
    arrays = synthetic_mano_arrays()
    np.testing.assert_allclose(model.weights.sum(1), 1.0)
    np.testing.assert_allclose(model.j_regressor.sum(1), 1.0)
    assert arrays["J_regressor"].format == "csc"
    comps = model.hands_components
    np.testing.assert_allclose(comps @ comps.T, np.eye(45), atol=1e-12)
    # One oriented surface: every directed edge once; unmatched edges = the 16-edge wrist.
    edges = collections.Counter((int(f[i]), int(f[(i + 1) % 3])) for f in model.faces
                                for i in range(3))
    assert max(edges.values()) == 1
    assert sum((b, a) not in edges for a, b in edges) == 16
    # Fingertip apexes sit at MANO's tip ids: the farthest vertices of each finger.
    tips = model.v_template[list(TIP_VERTEX_IDS)]
    assert np.all(tips[1:, 1] < -0.13)  # long fingers end well beyond the palm (-y)
    left = synthetic_mano_model("left")
    np.testing.assert_allclose(left.v_template[:, 0], -model.v_template[:, 0])


# --- The layer ---------------------------------------------------------------------------


def test_zero_pose_and_shape_give_template_and_regressed_joints(model):
    layer = ManoLayer(model=model, use_pca=False, dtype=torch.float64)
    out = layer(torch.zeros(2, 48, dtype=torch.float64))
    template = torch.from_numpy(model.v_template)
    torch.testing.assert_close(out.verts_m[1], template)
    skeleton = torch.from_numpy(model.j_regressor) @ template
    torch.testing.assert_close(out.joints_m[0, MANO_SKELETON], skeleton)
    torch.testing.assert_close(out.joints_m[0, [4, 8, 12, 16, 20]], template[list(TIP_VERTEX_IDS)])
    assert out.verts_m.shape == (2, 778, 3) and out.joints_m.shape == (2, 21, 3)


def test_global_rotation_is_rigid_about_the_root(model):
    layer = ManoLayer(model=model, ncomps=6, dtype=torch.float64)
    fingers = torch.randn(1, 6, dtype=torch.float64) * 0.5
    betas = torch.randn(1, 10, dtype=torch.float64)
    rvec = torch.tensor([[0.3, -1.1, 0.7]], dtype=torch.float64)
    still = layer(torch.cat([torch.zeros(1, 3, dtype=torch.float64), fingers], 1), betas)
    turned = layer(torch.cat([rvec, fingers], 1), betas)
    R = lbs.batch_rodrigues(rvec)[0]
    root = still.joints_m[0, 0]  # the wrist is MANO's root joint: rotation keeps it in place
    for name in ("verts_m", "joints_m"):
        expected = (getattr(still, name)[0] - root) @ R.T + root
        torch.testing.assert_close(getattr(turned, name)[0], expected)


def test_pca_and_full_pose_agree(model):
    pca = ManoLayer(model=model, use_pca=True, ncomps=12, flat_hand_mean=False,
                    dtype=torch.float64)
    full = ManoLayer(model=model, use_pca=False, flat_hand_mean=False, dtype=torch.float64)
    coeffs = torch.randn(3, 15, dtype=torch.float64)
    hand = coeffs[:, 3:] @ torch.from_numpy(model.hands_components[:12])
    a, b = pca(coeffs), full(torch.cat([coeffs[:, :3], hand], 1))
    torch.testing.assert_close(a.verts_m, b.verts_m)
    torch.testing.assert_close(a.joints_m, b.joints_m)


def test_rotation_modes_agree(model):
    aa = torch.randn(2, 16, 3, dtype=torch.float64)
    rotmats = lbs.batch_rodrigues(aa)
    outs = [ManoLayer(model=model, use_pca=False, rot_mode=mode, dtype=torch.float64)(x)
            for mode, x in (("axisang", aa.reshape(2, 48)), ("rotmat", rotmats),
                            ("rot6d", lbs.matrix_to_rot6d(rotmats)))]
    for other in outs[1:]:
        torch.testing.assert_close(other.verts_m, outs[0].verts_m)
    with pytest.raises(ValueError, match="rot6d pose must be"):
        ManoLayer(model=model, use_pca=False, rot_mode="rot6d")(aa)


def test_rodrigues_and_6d_maths():
    rvec = torch.tensor([[0.0, 0.0, 0.0], [1e-5, 0.0, 0.0], [0.0, np.pi / 2, 0.0]],
                        dtype=torch.float64, requires_grad=True)
    R = lbs.batch_rodrigues(rvec)
    torch.testing.assert_close(R[2] @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                               torch.tensor([0.0, 0, -1], dtype=torch.float64))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(
        3, 3, 3))
    R.sum().backward()
    assert torch.isfinite(rvec.grad).all()
    torch.testing.assert_close(lbs.rot6d_to_matrix(lbs.matrix_to_rot6d(R.detach())), R.detach())


def test_agrees_with_smplx_mano(model, tmp_path):
    smplx = pytest.importorskip("smplx")
    from smplx.utils import Struct

    torch.manual_seed(1)
    batch = 5
    arrays = synthetic_mano_arrays()
    for use_pca, flat in ((False, False), (True, True)):
        ncomps = 9 if use_pca else 45
        theirs = smplx.MANO(str(tmp_path), data_struct=Struct(**arrays), use_pca=use_pca,
                            num_pca_comps=ncomps, flat_hand_mean=flat, batch_size=batch,
                            dtype=torch.float64)
        ours = ManoLayer(model=model, use_pca=use_pca, ncomps=ncomps, flat_hand_mean=flat,
                         dtype=torch.float64)
        pose = torch.randn(batch, 3 + ncomps, dtype=torch.float64) * 0.6
        betas = torch.randn(batch, 10, dtype=torch.float64)
        trans = torch.randn(batch, 3, dtype=torch.float64) * 0.1
        ref = theirs(betas=betas, global_orient=pose[:, :3], hand_pose=pose[:, 3:], transl=trans)
        out = ours(pose, betas, trans)
        assert (out.verts_m - ref.vertices).abs().max() < 1e-6
        # smplx returns the 16 skeleton joints in MANO order (its fingertips differ).
        assert (out.joints_m[:, MANO_SKELETON] - ref.joints[:, :16]).abs().max() < 1e-6


def test_gradients_reach_pose_shape_and_translation(model):
    layer = ManoLayer(model=model, ncomps=6)
    pose = (torch.randn(2, 9) * 0.3).requires_grad_(True)
    betas = torch.zeros(2, 10, requires_grad=True)
    trans = torch.zeros(2, 3, requires_grad=True)
    out = layer(pose, betas, trans)
    K = torch.tensor([[500.0, 0, 128], [0, 500, 128], [0, 0, 1]]).expand(2, 3, 3)
    kp = perspective_project(out.joints_m + torch.tensor([0, 0, 0.5]), K)
    kp.square().sum().backward()
    for t in (pose, betas, trans):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_device_and_dtype_follow_inputs(model):
    layer = ManoLayer(model=model, ncomps=6)  # float32 buffers
    out = layer(torch.zeros(1, 9, dtype=torch.float64))
    assert out.verts_m.dtype == torch.float64
    assert layer.to(torch.float64).v_template.dtype == torch.float64


def test_layer_errors(model):
    with pytest.raises(ValueError, match="side"):
        ManoLayer("both", model=model)
    with pytest.raises(ValueError, match="use_pca needs"):
        ManoLayer(model=model, rot_mode="rotmat")
    layer = ManoLayer(model=model, ncomps=6)
    with pytest.raises(ValueError, match=r"\(B, 9\)"):
        layer(torch.zeros(1, 48))


def test_projections():
    pts = torch.tensor([[[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]]])
    K = torch.tensor([[[100.0, 0, 50], [0, 200, 60], [0, 0, 1]]])
    torch.testing.assert_close(perspective_project(pts, K),
                               torch.tensor([[[55.0, 40.0], [50.0, 60.0]]]))
    torch.testing.assert_close(perspective_project(pts, K[0]), perspective_project(pts, K))
    torch.testing.assert_close(
        weak_perspective_project(pts, torch.tensor([10.0]), torch.tensor([[1.0, 2.0]])),
        torch.tensor([[[2.0, 0.0], [1.0, 2.0]]]))


def test_left_shapedirs_bug_is_repaired_from_the_right_file(model, tmp_path):
    right_path = write_synthetic_mano(tmp_path / "MANO_RIGHT.pkl", "right", "numpy")
    good_left = synthetic_mano_model("left")
    assert fix_left_shapedirs(good_left, model) is good_left  # already mirrored: untouched
    buggy = synthetic_mano_arrays("left")
    buggy["shapedirs"] = synthetic_mano_arrays("right")["shapedirs"]  # like the official file
    (tmp_path / "MANO_LEFT.pkl").write_bytes(pickle.dumps(buggy))
    layer = ManoLayer("left", mano_root=tmp_path, ncomps=6)
    np.testing.assert_allclose(layer.shapedirs.numpy(), good_left.shapedirs, atol=1e-7)
    assert "known MANO_LEFT bug" in layer.source and right_path.is_file()
    # Given the left file itself, there is no right file to compare with: loaded as is.
    as_is = ManoLayer("left", mano_root=tmp_path / "MANO_LEFT.pkl", ncomps=6)
    np.testing.assert_allclose(as_is.shapedirs.numpy(), buggy["shapedirs"], atol=1e-7)
