"""Fitting MANO to 2D keypoints recovers a known synthetic hand; the RHD demo runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manopth.fit import FitConfig, fit_mano_to_keypoints, rotation_hypotheses
from manopth.manolayer import ManoLayer
from manopth.projection import perspective_project
from manopth.synthetic_model import synthetic_mano_model


@pytest.fixture(scope="module")
def layer():
    return ManoLayer(model=synthetic_mano_model("right"), ncomps=6)


def test_rotation_hypotheses_are_rotations():
    rots = rotation_hypotheses(num_rolls=2)
    assert rots.shape == (48, 3, 3)
    torch.testing.assert_close(rots @ rots.transpose(1, 2),
                               torch.eye(3, dtype=rots.dtype).expand(48, 3, 3))
    torch.testing.assert_close(torch.det(rots), torch.ones(48, dtype=rots.dtype))


@pytest.mark.slow
def test_fit_recovers_known_pose_keypoints(layer):
    gen = torch.Generator().manual_seed(3)
    batch = 3
    pose = torch.cat([torch.randn(batch, 3, generator=gen) * 0.8,
                      torch.randn(batch, 6, generator=gen) * 0.7], 1)
    betas = torch.randn(batch, 10, generator=gen) * 0.5
    trans = torch.tensor([[0.02, -0.01, 0.5]]) + torch.randn(batch, 3, generator=gen) * 0.03
    K = torch.tensor([[480.0, 0, 128], [0, 480, 128], [0, 0, 1]]).expand(batch, 3, 3)
    with torch.no_grad():
        target = perspective_project(layer(pose, betas, trans).joints_m, K)
        start = perspective_project(layer(torch.zeros(batch, 9), None, trans).joints_m, K)
    # Weak priors: the test checks that the optimiser finds the keypoints; the default
    # priors deliberately trade a little 2D error for plausible shapes on real data.
    result = fit_mano_to_keypoints(layer, target, K, cfg=FitConfig(w_pose=0.1, w_shape=1.0))
    assert ((start - target).norm(dim=-1).mean(1) > 10.0).all()  # real work to do
    assert (result.reproj_error_px < 1.0).all(), result.reproj_error_px
    torch.testing.assert_close(result.kp2d_px, perspective_project(result.joints_m, K))
    assert result.verts_m.shape == (batch, 778, 3) and result.hand_pose.shape == (batch, 6)


def test_fit_ignores_unobserved_keypoints(layer):
    gen = torch.Generator().manual_seed(5)
    pose = torch.cat([torch.randn(1, 3, generator=gen) * 0.5, torch.zeros(1, 6)], 1)
    trans = torch.tensor([[0.0, 0.0, 0.45]])
    K = torch.tensor([[[500.0, 0, 160], [0, 500, 160], [0, 0, 1]]])
    with torch.no_grad():
        target = perspective_project(layer(pose, None, trans).joints_m, K)
    weights = torch.ones(1, 21)
    weights[0, 17:] = 0.0
    corrupted = target.clone()
    corrupted[0, 17:] += 1e4  # garbage where the weight is zero
    cfg = FitConfig(iters_rigid=40, iters_full=60, iters_lbfgs=20, fit_shape=False)
    result = fit_mano_to_keypoints(layer, corrupted, K, weights, cfg)
    assert np.isfinite(result.loss.item())
    assert result.reproj_error_px.item() < 3.0
    with pytest.raises(ValueError, match="palm keypoints"):
        fit_mano_to_keypoints(layer, target, K, torch.zeros(1, 21), cfg)


@pytest.mark.realdata
@pytest.mark.slow
def test_fit_rhd_demo_on_a_real_frame(realdata, tmp_path):
    from manopth import fit_rhd

    data_root = realdata / "RHD" / "RHD_published_v2"
    out = tmp_path / "fit.png"
    summary = fit_rhd.main(["--frame", "0", "--data_root", str(data_root), "--synthetic_mano",
                            "--out", str(out), "--iters_full", "40", "--iters_lbfgs", "10"])
    assert out.is_file() and out.stat().st_size > 1000
    assert np.isfinite(summary["reproj_error_px"])
