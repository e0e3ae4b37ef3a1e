"""The MANO head: cameras, outputs, losses, the float64 gradient check of the whole chain, the
guards (non-finite rotations, missing K, bad MANO files) and old configs / checkpoints."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from manopth.loader import ManoFileError
from manopth.projection import perspective_project
from manopth.synthetic_model import synthetic_mano_arrays, synthetic_mano_model
from models import HandFlowCriterion, ModelConfig, build_model, mano_loss_terms
from models.losses import MANO_3D_UNIT_M
from models.mano_head import (
    ManoHead,
    MissingCameraError,
    describe_mano_model,
    resolve_mano_model,
    scale_intrinsics,
)
from utils.heatmap import HeatmapCodec

SIZE = 64  # input side of the tiny test configs


def tiny_cfg(**overrides) -> ModelConfig:
    values = {"channels": 8, "input_size": SIZE, "mano_enabled": True, "mano_model": "synthetic",
              "mano_hidden": 4, "flow_steps": 2, **overrides}
    return ModelConfig.preset("small", **values)


def crop_K(batch: int, f: float = 120.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    c = (SIZE - 1) / 2
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=dtype).repeat(batch,
                                                                                         1, 1)


def peaked_heatmaps(kp_hm: torch.Tensor, size: int = SIZE // 4) -> torch.Tensor:
    """(B, 21, h, w) Gaussian heatmaps with peaks at (B, 21, 2) heatmap pixels."""
    grid = torch.arange(size, dtype=torch.float32)
    gx = torch.exp(-(grid - kp_hm[..., 0:1]) ** 2 / 2.0)
    gy = torch.exp(-(grid - kp_hm[..., 1:2]) ** 2 / 2.0)
    return gy[..., :, None] * gx[..., None, :]


def decoded_keypoints(kp_hm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kp2d_px, peaks) as HandFlowNet hands them to its heads: the decode of
    `peaked_heatmaps(kp_hm)`."""
    return HeatmapCodec.for_input_size(SIZE).decode_torch(peaked_heatmaps(kp_hm))


@pytest.fixture(scope="module")
def head() -> ManoHead:
    torch.manual_seed(0)
    head = ManoHead.from_config(tiny_cfg(), synthetic_mano_model("right")).eval()
    with torch.no_grad():  # a non-trivial pose, shape and camera
        head.mlp[-1].weight.normal_(0.0, 0.05)
    return head


def test_perspective_and_weak_cameras(head: ManoHead) -> None:
    torch.manual_seed(1)
    feats = torch.randn(3, 8, 16, 16)
    kp_hm = torch.rand(3, 21, 2) * 10 + 3
    K = crop_K(3)
    K[2] = float("nan")  # a COCO-format sample: no camera
    with torch.no_grad():
        out = head(feats, *decoded_keypoints(kp_hm), K)
    assert out.perspective.tolist() == [True, True, False]
    assert out.verts_m.shape == (3, 778, 3) and out.joints_m.shape == (3, 21, 3)
    assert out.kp2d_px.shape == (3, 21, 2) and out.verts2d_px.shape == (3, 778, 2)
    assert out.pose.shape == (3, 16, 6) and out.betas.shape == (3, 10)
    assert out.rot_mats.shape == (3, 16, 3, 3) and out.camera.shape == (3, 3)
    # Perspective rows: the joints in the camera frame project with K to kp2d_px.
    torch.testing.assert_close(perspective_project(out.joints_m[:2], K[:2]), out.kp2d_px[:2],
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(out.joints_m - out.joints_m[:, :1], out.joints_rel_m)
    torch.testing.assert_close(out.joints_rel_m[:, 0], torch.zeros(3, 3))
    # The root projects to the camera's root pixel; its depth follows the log-depth d.
    torch.testing.assert_close(out.kp2d_px[:, 0], out.camera[:, :2], atol=1e-3, rtol=0)
    depth = 120.0 * 0.3 / SIZE * torch.exp(out.camera[:2, 2])
    torch.testing.assert_close(out.root_m[:2, 2], depth)
    # Weak rows: kp = s * xy_rel + root_uv, and no camera frame (root-relative joints).
    s = out.scale_px_per_m[2]
    torch.testing.assert_close(out.kp2d_px[2], s * out.joints_rel_m[2, :, :2] + out.camera[2, :2])
    torch.testing.assert_close(out.joints_m[2], out.joints_rel_m[2])
    assert torch.equal(out.root_m[2], torch.zeros(3))
    # Rotations are rotations.
    eye = torch.eye(3).expand(3, 16, 3, 3)
    torch.testing.assert_close(out.rot_mats @ out.rot_mats.transpose(-1, -2), eye, atol=1e-5,
                               rtol=0)


def test_initial_head_is_the_mean_hand_on_the_heatmap_wrist() -> None:
    head = ManoHead.from_config(tiny_cfg(), synthetic_mano_model("right")).eval()
    kp_hm = torch.full((1, 21, 2), 8.0)
    kp_hm[0, 0] = torch.tensor([5.0, 9.0])  # the wrist at heatmap pixel (5, 9)
    with torch.no_grad():
        out = head(torch.randn(1, 8, 16, 16), *decoded_keypoints(kp_hm), crop_K(1))
    wrist_crop = (torch.tensor([5.0, 9.0]) + 0.5) * 4 - 0.5
    torch.testing.assert_close(out.camera[0, :2], wrist_crop, atol=0.5, rtol=0)  # px
    assert out.betas.abs().max() < 0.05
    diff = out.rot_mats[0, 1:] - out.mean_finger_rotmats
    assert diff.abs().max() < 0.05  # MANO's mean pose
    torch.testing.assert_close(out.rot_mats[0, 0], torch.eye(3), atol=0.05, rtol=0)


def test_pca_pose_and_camera_modes() -> None:
    torch.manual_seed(2)
    head = ManoHead.from_config(tiny_cfg(mano_pose="pca", mano_ncomps=6),
                                synthetic_mano_model()).eval()
    kp, peaks = decoded_keypoints(torch.rand(2, 21, 2) * 12)
    with torch.no_grad():
        out = head(torch.randn(2, 8, 16, 16), kp, peaks, crop_K(2))
    assert out.pose.shape == (2, 12) and out.perspective.all()
    weak = ManoHead.from_config(tiny_cfg(mano_camera="weak"), synthetic_mano_model()).eval()
    with torch.no_grad():
        assert not weak(torch.randn(2, 8, 16, 16), kp, peaks, crop_K(2)).perspective.any()
    persp = ManoHead.from_config(tiny_cfg(mano_camera="perspective"), synthetic_mano_model()).eval()
    K = crop_K(2)
    K[1, 0, 0] = float("nan")
    with pytest.raises(MissingCameraError, match=r"batch rows \[1\]") as info:
        persp(torch.randn(2, 8, 16, 16), kp, peaks, K)
    assert info.value.sample_indices == [1]
    with pytest.raises(MissingCameraError, match="no K was given"):
        persp(torch.randn(2, 8, 16, 16), kp, peaks, None)


def test_non_finite_rotations_are_named(head: ManoHead) -> None:
    feats = torch.randn(2, 8, 16, 16)
    feats[1, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite predicted rotations \(rot6d\) in "
                       r"batch rows \[1\]"):
        head(feats, *decoded_keypoints(torch.rand(2, 21, 2) * 12), crop_K(2))


def test_mano_loss_terms_by_hand(head: ManoHead) -> None:
    with torch.no_grad():
        out = head(torch.randn(2, 8, 16, 16), *decoded_keypoints(torch.rand(2, 21, 2) * 12),
                   crop_K(2))
    target = out.kp2d_px.clone()
    target[0, 3] += torch.tensor([SIZE * 0.1, 0.0])  # 0.1 of the input side off on joint 3
    target[1, 5] = float("nan")  # unlabelled: ignored (weight 0, no NaN)
    visible = torch.ones(2, 21, dtype=torch.bool)
    visible[1, 5] = False
    gt = out.joints_rel_m.clone() + torch.tensor([0.1, 0.2, 0.5])  # any origin
    gt[0, 4, 2] += 0.02  # 2 cm off on one joint
    batch = {"image": torch.zeros(2, 3, SIZE, SIZE), "kp2d_px": target, "visible": visible,
             "joints_m": torch.cat([gt[:1], torch.full((1, 21, 3), float("nan"))]),
             "has_3d": torch.tensor([True, False])}
    terms = mano_loss_terms(out, batch)
    # Sample 0: one of 21 joints at 0.1 -> 0.01 / 21; sample 1: 0; mean over 2 samples.
    assert terms["mano_2d"].item() == pytest.approx(0.01 / 21 / 2, rel=1e-4)
    assert terms["mano_3d"].item() == pytest.approx((0.02 / MANO_3D_UNIT_M) ** 2 / 21, rel=1e-4)
    assert terms["mano_shape_prior"].item() == pytest.approx(out.betas.pow(2).mean().item())
    diff = out.rot_mats[:, 1:] - out.mean_finger_rotmats
    assert terms["mano_pose_prior"].item() == pytest.approx(diff.pow(2).sum((-2, -1)).mean()
                                                            .item(), rel=1e-5)


def test_criterion_terms_only_with_a_head() -> None:
    model = build_model(tiny_cfg()).train()
    images = torch.rand(2, 3, SIZE, SIZE)
    batch = {"image": images, "heatmaps": torch.zeros(2, 21, 16, 16),
             "heatmap_weights": torch.ones(2, 21), "mask": torch.zeros(2, 1, 16, 16),
             "has_mask": torch.tensor([True, True]), "kp2d_px": torch.rand(2, 21, 2) * SIZE,
             "visible": torch.ones(2, 21, dtype=torch.bool), "joints_m": torch.rand(2, 21, 3),
             "has_3d": torch.tensor([True, True])}
    weights = {"mano_2d": 10.0, "mano_3d": 1.0, "mano_pose_prior": 0.1, "mano_shape_prior": 0.1}
    terms = HandFlowCriterion(weights)(model(images, K=crop_K(2)), batch)
    assert set(terms.to_dict()) == {"heatmap", "mask", "flow", "mano_2d", "mano_3d",
                                    "mano_pose_prior", "mano_shape_prior", "total"}
    base = 100 * terms["heatmap"] + terms["mask"] + 0.1 * terms["flow"]
    mano = sum(w * terms[k] for k, w in weights.items())
    torch.testing.assert_close(terms.total, base + mano)
    terms.total.backward()
    assert model.mano.mlp[-1].weight.grad.abs().sum() > 0
    assert model.seednet.conv1.weight.grad.abs().sum() > 0  # mano_detach False
    plain = build_model(dataclasses.replace(tiny_cfg(), mano_enabled=False))
    assert set(HandFlowCriterion()(plain(images), batch).to_dict()) == {"heatmap", "mask",
                                                                        "flow", "total"}
    with pytest.raises(ValueError, match="no MANO head"):
        HandFlowCriterion({"mano_2d": 1.0})(plain(images), batch)


def test_gradcheck_head_mano_projection_loss_float64() -> None:
    """torch.autograd.gradcheck through head -> MANO -> projection -> loss (float64)."""
    torch.manual_seed(3)
    head = ManoHead.from_config(tiny_cfg(), synthetic_mano_model("right")).double().eval()
    with torch.no_grad():
        head.mlp[-1].weight.normal_(0.0, 0.05)
    feats = torch.randn(2, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    kp, peaks = (t.double() for t in decoded_keypoints(torch.rand(2, 21, 2) * 12))
    K = crop_K(2, dtype=torch.float64)
    K[1] = float("nan")  # one perspective and one weak-perspective sample
    batch = {"image": torch.zeros(2, 3, SIZE, SIZE),
             "kp2d_px": torch.rand(2, 21, 2, dtype=torch.float64) * SIZE,
             "visible": torch.rand(2, 21) > 0.3,
             "joints_m": torch.randn(2, 21, 3, dtype=torch.float64) * 0.05,
             "has_3d": torch.tensor([True, False])}

    def loss(x: torch.Tensor) -> torch.Tensor:
        return sum(mano_loss_terms(head(x, kp, peaks, K), batch).values())

    assert torch.autograd.gradcheck(loss, (feats,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_model_outputs_under_bf16_autocast_are_float32() -> None:
    model = build_model(tiny_cfg()).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, SIZE, SIZE), K=crop_K(1))
    assert out.mano.verts_m.dtype == torch.float32 and torch.isfinite(out.mano.kp2d_px).all()
    assert model(torch.rand(1, 3, SIZE, SIZE), with_mano=False).mano is None


def test_checkpoints_hold_no_mano_arrays_and_old_configs_load() -> None:
    model = build_model(tiny_cfg())
    keys = list(model.state_dict())
    assert any(k.startswith("mano.mlp") for k in keys)
    assert not [k for k in keys if k.startswith("mano.layer") or "mean_finger" in k]
    # A config dict written before the MANO fields existed still loads, with the head off.
    old = {k: v for k, v in ModelConfig.preset("small").to_dict().items()
           if not k.startswith("mano_")}
    cfg = ModelConfig.from_dict(old)
    assert not cfg.mano_enabled and describe_mano_model(cfg) == {"enabled": False}
    plain = build_model(cfg)
    assert plain.mano is None
    plain.load_state_dict(build_model(ModelConfig.preset("small")).state_dict(), strict=True)
    info = describe_mano_model(tiny_cfg())
    assert info["standin"] is True and "NOT MANO" in info["note"]
    with pytest.raises(ValueError, match="mano_camera"):
        tiny_cfg(mano_camera="fisheye")


def test_bad_mano_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "MANO_RIGHT.pkl"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*no such file or folder.*mano\.is"):
        resolve_mano_model(str(missing))
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/MANO_RIGHT\.pkl: no such file"):
        resolve_mano_model(str(folder))
    arrays = synthetic_mano_arrays("right")
    arrays["v_template"] = np.zeros((6890, 3))  # an SMPL-sized body, not a hand
    wrong_size = tmp_path / "smpl.pkl"
    wrong_size.write_bytes(pickle.dumps({k: np.asarray(v) if not hasattr(v, "toarray") else v
                                         for k, v in arrays.items()}))
    with pytest.raises(ManoFileError, match=r"smpl\.pkl: 'v_template' has shape \(6890, 3\)"):
        resolve_mano_model(str(wrong_size))
    wrong_type = tmp_path / "list.pkl"
    wrong_type.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ManoFileError, match=r"list\.pkl: holds a list, not a dict"):
        resolve_mano_model(str(wrong_type))
    not_pickle = tmp_path / "text.pkl"
    not_pickle.write_text("MANO model\n")
    with pytest.raises(ManoFileError, match=r"text\.pkl"):
        resolve_mano_model(str(not_pickle))
    # A model built on a missing real file says where MANO should be.
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        build_model(tiny_cfg(mano_model=str(missing)))


def test_scale_intrinsics_matches_resizing_the_crop() -> None:
    K = crop_K(1)
    points = torch.tensor([[[0.02, -0.01, 0.5], [0.0, 0.0, 0.4]]])
    small = scale_intrinsics(K, SIZE, SIZE // 2)
    expected = (perspective_project(points, K) + 0.5) * 0.5 - 0.5
    torch.testing.assert_close(perspective_project(points, small), expected)
    assert scale_intrinsics(K, SIZE, SIZE) is K


def test_joints_without_the_mesh_match_the_full_layer(head: ManoHead) -> None:
    torch.manual_seed(1)
    rot = head.rotations(torch.randn(3, head.pose_dim) * 0.3 + head.mlp[-1].bias[:head.pose_dim])
    betas = torch.randn(3, 10)
    full = head.layer.forward_rotmats(rot, betas).joints_m
    torch.testing.assert_close(head.layer.joints_rotmats(rot, betas), full, atol=1e-6, rtol=0)


def test_fit_brings_the_projection_to_the_keypoints(head: ManoHead) -> None:
    # Targets: the projection of another hand of the same model (reachable), both cameras.
    torch.manual_seed(2)
    features = torch.randn(4, head.encoder[0].in_channels, SIZE // 4, SIZE // 4)
    kp, peaks = decoded_keypoints(torch.rand(4, 21, 2) * 8 + 4)
    K = crop_K(4)
    K[2:] = float("nan")  # rows 2-3: weak perspective
    with torch.no_grad():
        start = head(features, kp, peaks, K)
        other = head.hand(start.pose + 0.2 * torch.randn_like(start.pose), start.betas,
                          start.camera[:, :2] + 2.0, start.camera[:, 2] + 0.1, K)
        weights = torch.ones(4, 21)
        fitted = head.fit(start, other.kp2d_px, weights, K, steps=150)
    before = (start.kp2d_px - other.kp2d_px).norm(dim=-1).mean(dim=1)
    after = (fitted.kp2d_px - other.kp2d_px).norm(dim=-1).mean(dim=1)
    assert torch.all(after < 0.25 * before), (before, after)
    assert fitted.perspective.tolist() == [True, True, False, False]
    # The mesh is the fitted hand's: its joints and vertices agree with a fresh evaluation.
    again = head.hand(fitted.pose, fitted.betas, fitted.camera[:, :2], fitted.camera[:, 2], K)
    torch.testing.assert_close(again.verts2d_px, fitted.verts2d_px)
    assert all(p.grad is None for p in head.parameters())  # the network is untouched
    assert head.fit(start, other.kp2d_px, weights, K, steps=0) is start
    with pytest.raises(ValueError, match=">= 0"):
        head.fit(start, other.kp2d_px, weights, K, steps=-1)


def test_handflow_fit_steps_follow_the_heatmaps() -> None:
    torch.manual_seed(3)
    model = build_model(tiny_cfg()).eval()
    image = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        plain = model(image, K=crop_K(2))
        fitted = model(image, K=crop_K(2), mano_fit_steps=60)
    kp, _ = model.codec.decode_torch(plain.heatmaps[-1])
    assert torch.equal(plain.heatmaps[-1], fitted.heatmaps[-1])
    # An untrained model's keypoints are scattered, not a hand: closer, not reached.
    before = (plain.mano.kp2d_px - kp).norm(dim=-1).mean()
    after = (fitted.mano.kp2d_px - kp).norm(dim=-1).mean()
    assert after < 0.75 * before
