"""Metric functions against hand-computed cases."""

import json

import numpy as np
import pytest

from utils import metrics as M


def _one_keypoint(err_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    gt = np.zeros((1, 1, 2))
    pred = gt + np.array([err_px, 0.0])
    return pred, gt, np.ones((1, 1), bool)


def test_two_auc_definitions_differ_by_hand():
    # 0 px error: MMPose's first threshold (0 px) is strict, so 19 of 20 -> 0.95; Z&B: 1.0.
    pred, gt, vis = _one_keypoint(0.0)
    assert M.auc_mmpose(pred, gt, vis) == pytest.approx(0.95)
    assert M.zb_measures(pred, gt, vis).auc == pytest.approx(1.0)
    # 15 px: MMPose thresholds 16.5..28.5 pass (9 of 20) -> 0.45. Z&B: the step lies between
    # 14.21 and 15.79 px, the trapezoid gives area 15 over a range of 30 -> 0.5.
    pred, gt, vis = _one_keypoint(15.0)
    assert M.auc_mmpose(pred, gt, vis) == pytest.approx(0.45)
    assert M.zb_measures(pred, gt, vis).auc == pytest.approx(0.5)
    # Beyond 30 px both are 0.
    pred, gt, vis = _one_keypoint(31.0)
    assert M.auc_mmpose(pred, gt, vis) == 0.0
    assert M.zb_measures(pred, gt, vis).auc == 0.0


def test_mmpose_auc_thresholds():
    thr = M.mmpose_auc_thresholds_px()
    assert thr[0] == 0.0 and thr[1] == pytest.approx(1.5) and thr[-1] == pytest.approx(28.5)
    assert thr.size == 20


def test_gt_bbox_matches_mmpose_rhd_annotations(realdata):
    # MMPose's converted RHD json stores the box we must reproduce.
    data = json.loads((realdata / "mmpose_testdata/rhd/test_rhd.json").read_text())
    for ann in data["annotations"]:
        kp = np.asarray(ann["keypoints"], np.float64).reshape(1, 21, 3)[..., :2]
        size = M.gt_bbox_size(kp, np.array([320, 320]))
        assert size[0] == pytest.approx(max(ann["bbox"][2:]), abs=1e-3)


def test_gt_bbox_ignores_keypoints_outside_image():
    gt = np.array([[[10.0, 10.0], [20.0, 30.0], [500.0, 10.0], [-5.0, 12.0]]])
    assert M.gt_bbox_size(gt, np.array([100, 100]))[0] == pytest.approx(1.2 * 20.0)
    assert M.gt_bbox_size(gt, np.array([100, 100]), factor=1.0)[0] == pytest.approx(20.0)
    # No keypoint inside: size 0, and PCK skips the sample.
    assert M.gt_bbox_size(gt + 1000.0, np.array([100, 100]))[0] == 0.0


def test_pck_is_mean_of_per_joint_accuracies():
    # 2 samples, 2 joints, norm 100 px -> threshold 20 px (strictly below).
    gt = np.zeros((2, 2, 2))
    pred = gt.copy()
    pred[0, 0, 0] = 19.9  # joint 0: correct
    pred[1, 0, 0] = 20.0  # joint 0: wrong (not strictly below)
    pred[0, 1, 0] = 50.0  # joint 1: wrong; sample 1 joint 1 invisible
    vis = np.array([[True, True], [True, False]])
    avg, per_joint = M.pck_mmpose(pred, gt, vis, np.array([100.0, 100.0]))
    np.testing.assert_allclose(per_joint, [0.5, 0.0])
    assert avg == pytest.approx(0.25)  # not 1/3 (the pooled fraction)
    # A sample with norm 0 is not scored.
    avg, per_joint = M.pck_mmpose(pred, gt, vis, np.array([100.0, 0.0]))
    np.testing.assert_allclose(per_joint, [1.0, 0.0])


def test_epe_protocols():
    gt = np.zeros((2, 2, 2))
    pred = gt.copy()
    pred[0, 0] = [3.0, 4.0]  # 5 px
    pred[1, 0] = [0.0, 1.0]  # 1 px
    pred[0, 1] = [0.0, 9.0]  # 9 px
    pred[1, 1] = [0.0, 100.0]  # invisible
    vis = np.array([[True, True], [True, False]])
    assert M.epe_mmpose(pred, gt, vis) == pytest.approx(5.0)  # (5 + 1 + 9) / 3
    zb = M.zb_measures(pred, gt, vis)
    assert zb.epe_mean_px == pytest.approx((3.0 + 9.0) / 2)  # per-joint means 3 and 9
    assert zb.epe_median_px == pytest.approx((3.0 + 9.0) / 2)
    np.testing.assert_allclose(zb.per_joint_epe_median_px, [3.0, 9.0])
    # Per-joint curves start at 0 (no error is 0 here) and reach 1 by 30 px.
    assert zb.per_joint_pck_curve.shape == (2, 20)
    assert zb.per_joint_pck_curve[0, 0] == 0.0 and zb.per_joint_pck_curve[0, -1] == 1.0


def test_zb_joint_without_data_is_skipped():
    pred, gt = np.zeros((1, 2, 2)), np.zeros((1, 2, 2))
    zb = M.zb_measures(pred, gt, np.array([[True, False]]))
    assert zb.auc == pytest.approx(1.0)
    assert np.isnan(zb.per_joint_auc[1])


def test_heatmap_accuracy_by_hand():
    pred = np.zeros((1, 3, 64, 64))
    gt = np.zeros((1, 3, 64, 64))
    gt[0, 0, 10, 10] = 1.0
    pred[0, 0, 10, 13] = 1.0  # 3 px off: correct (< 3.2)
    gt[0, 1, 20, 20] = 1.0
    pred[0, 1, 24, 20] = 1.0  # 4 px off: wrong
    gt[0, 2, 0, 30] = 1.0  # target in row 0: BiHand does not score it
    pred[0, 2, 0, 30] = 1.0
    errs = M.heatmap_argmax_errors(pred, gt, np.ones((1, 3)))
    np.testing.assert_allclose(errs[0, :2], [3.0, 4.0])
    assert np.isnan(errs[0, 2])
    avg, per_joint = M.heatmap_accuracy(pred, gt, np.ones((1, 3)))
    assert avg == pytest.approx(0.5)
    np.testing.assert_allclose(per_joint[:2], [1.0, 0.0])
    # Weight 0 removes a joint; an all-zero prediction sits at (0, 0).
    errs = M.heatmap_argmax_errors(np.zeros_like(pred), gt, np.array([[1.0, 0.0, 1.0]]))
    assert errs[0, 0] == pytest.approx(np.hypot(10, 10)) and np.isnan(errs[0, 1])


def test_spearman_sign_and_nan_handling():
    loglik = np.array([5.0, 4.0, 3.0, 2.0, 1.0, np.nan])
    epe = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 1.0])
    rho, p, n = M.loglik_epe_spearman(loglik, epe)
    assert rho == pytest.approx(-1.0) and n == 5 and p < 0.05
    rho, _, n = M.loglik_epe_spearman(np.ones(4), np.arange(4.0))
    assert np.isnan(rho) and n == 4


def test_accumulator_matches_pure_functions():
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 250, (10, 21, 2))
    pred = gt + rng.normal(0, 8, gt.shape)
    vis = rng.random((10, 21)) > 0.1
    loglik = -np.linalg.norm(pred - gt, axis=-1).mean(axis=1)  # perfectly anti-correlated
    acc = M.MetricAccumulator()
    for sl in (slice(0, 4), slice(4, 10)):
        acc.update(pred[sl], gt[sl], vis[sl], np.array([320, 320]), log_likelihood=loglik[sl])
    s = acc.compute()
    norm = M.gt_bbox_size(gt, np.array([320, 320]))
    assert s.pck == pytest.approx(M.pck_mmpose(pred, gt, vis, norm)[0])
    assert s.auc == pytest.approx(M.auc_mmpose(pred, gt, vis))
    assert s.epe_mean_px == pytest.approx(M.epe_mmpose(pred, gt, vis))
    assert s.zb_auc == pytest.approx(M.zb_measures(pred, gt, vis).auc)
    assert s.num_samples == 10 and s.num_keypoints == int(vis.sum())
    assert s.loglik_epe_spearman < -0.5
    assert s.acc_hm is None
    json.dumps(s.to_dict())  # JSON-ready
    with pytest.raises(ValueError, match="no samples"):
        M.MetricAccumulator().compute()


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        M.keypoint_errors(np.zeros((1, 21, 2)), np.zeros((1, 20, 2)), np.ones((1, 21), bool))
