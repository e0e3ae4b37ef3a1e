"""3D joint metrics: hand-computed MPJPE, PA-MPJPE, BiHand's alignment, 3D PCK and AUC."""

from __future__ import annotations

import numpy as np
import pytest

from utils.metrics import zb_measures_from_errors
from utils.metrics3d import (
    BIHAND_THRESHOLDS_MM,
    ZB_THRESHOLDS_MM,
    Metric3DAccumulator,
    bihand_align,
    metrics_3d,
    mpjpe_errors_mm,
    pa_mpjpe_errors_mm,
    pck_at_mm,
    procrustes_align,
)


def _hand(seed: int = 0, n: int = 1) -> np.ndarray:
    """(n, 21, 3) joints in metres, a hand-sized random cloud 0.5 m in front of the camera."""
    rng = np.random.default_rng(seed)
    return rng.normal(scale=0.04, size=(n, 21, 3)) + np.array([0.0, 0.0, 0.5])


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_mpjpe_is_root_relative_and_in_mm() -> None:
    gt = np.zeros((1, 21, 3))
    gt[0, 1:, 0] = 0.01 * np.arange(1, 21)  # joints 1 cm apart on x
    moved = gt + np.array([0.3, -0.2, 1.0])  # a translation costs nothing
    np.testing.assert_allclose(mpjpe_errors_mm(moved, gt), 0.0, atol=1e-9)
    # One joint 3 mm off in y (and the root untouched): errors 0 everywhere else.
    pred = gt.copy()
    pred[0, 7, 1] += 0.003
    errors = mpjpe_errors_mm(pred, gt)
    assert errors[0, 7] == pytest.approx(3.0)
    assert errors.sum() == pytest.approx(3.0)
    # Moving the root moves every other joint relative to it: 20 joints x 4 mm.
    pred = gt.copy()
    pred[0, 0, 2] += 0.004
    assert mpjpe_errors_mm(pred, gt).sum() == pytest.approx(80.0)


def test_procrustes_removes_rotation_scale_translation() -> None:
    gt = _hand(1, n=3)
    pred = np.stack([1.7 * gt[i] @ _rotation(0.3 * (i + 1)).T + [0.1, 0.2, -0.3]
                     for i in range(3)])
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-9)
    np.testing.assert_allclose(pa_mpjpe_errors_mm(pred, gt), 0.0, atol=1e-6)
    # A reflection is not a rotation: it cannot be aligned away.
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    assert pa_mpjpe_errors_mm(mirrored, gt).mean() > 1.0


def test_bihand_alignment_takes_root_and_scale_from_the_ground_truth() -> None:
    gt = _hand(2)
    # Twice the size, shifted: after alignment (middle MCP root, wrist-middle MCP bone) exact.
    pred = 2.0 * (gt - gt[:, 9:10]) + np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(bihand_align(pred, gt), gt, atol=1e-12)
    # A rotation is not aligned away (unlike Procrustes).
    rotated = (gt - gt[:, 9:10]) @ _rotation(0.5).T + gt[:, 9:10]
    aligned = bihand_align(rotated, gt)
    assert np.linalg.norm(aligned - gt, axis=-1).mean() > 5e-3
    # Bone length by hand: gt bone 0.05, pred bone 0.1 -> the prediction is halved.
    gt = np.zeros((1, 21, 3))
    gt[0, 9] = [0.0, -0.05, 0.0]
    pred = np.zeros((1, 21, 3))
    pred[0, 9] = [0.0, -0.1, 0.0]
    pred[0, 5] = [0.02, -0.1, 0.0]  # 2 cm beside the root -> 1 cm after halving
    aligned = bihand_align(pred, gt)
    np.testing.assert_allclose(aligned[0, 0], [0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(aligned[0, 5], [0.01, -0.05, 0.0], atol=1e-12)


def test_3d_pck_and_auc_by_hand() -> None:
    # BiHand's range 20-50 mm: an error of 20 mm passes every threshold (<=): AUC 1; 60 mm
    # none: 0; exactly 50 mm only the last threshold: one trapezoid of half height over the
    # last step of 30/19 mm, divided by the 30 mm range = 1/38.
    for error, expected in ((20.0, 1.0), (60.0, 0.0), (50.0, 1.0 / 38.0), (10.0, 1.0)):
        errors = np.full((4, 21), error)
        assert zb_measures_from_errors(errors, BIHAND_THRESHOLDS_MM).auc == pytest.approx(expected)
    # Z&B's 0-50 mm: 25 mm lies between thresholds 450/19 and 500/19 mm; the area right of
    # it is (50 - 500/19) + (25/19) / 2 = 25 -> AUC 0.5.
    assert zb_measures_from_errors(np.full((2, 21), 25.0), ZB_THRESHOLDS_MM).auc == \
        pytest.approx(0.5)
    # Half the samples perfect, half far: AUC 0.5, PCK@20 0.5.
    errors = np.concatenate([np.zeros((3, 21)), np.full((3, 21), 80.0)])
    assert zb_measures_from_errors(errors, BIHAND_THRESHOLDS_MM).auc == pytest.approx(0.5)
    assert pck_at_mm(errors, 20.0) == pytest.approx(0.5)
    # PCK is the mean of per-joint fractions (NaN = not scored).
    errors = np.array([[10.0, 30.0], [np.nan, 10.0]])
    assert pck_at_mm(errors, 20.0) == pytest.approx((1.0 + 0.5) / 2)


def test_metrics_summary_and_accumulator() -> None:
    gt = _hand(3, n=4)
    pred = gt.copy()
    pred[:, 1:] += np.array([0.0, 0.0, 0.01])  # every non-root joint 10 mm behind
    summary = metrics_3d(pred, gt)
    assert summary.num_samples == 4
    assert summary.mpjpe_mm == pytest.approx(10.0 * 20 / 21)
    assert summary.pck_mm["20"] == pytest.approx(1.0)
    assert summary.per_joint["mpjpe_mm"][0] == pytest.approx(0.0)
    assert len(summary.per_joint["auc_20_50"]) == 21
    assert summary.bihand_thresholds_mm[0] == 20.0 and summary.zb_thresholds_mm[-1] == 50.0
    acc = Metric3DAccumulator()
    assert acc.compute() is None
    nan_gt = gt.copy()
    nan_gt[1] = np.nan
    acc.update(pred, nan_gt, np.array([True, True, False, True]))  # rows 1 (NaN), 2 skipped
    out = acc.compute()
    assert out.num_samples == 2
    assert out.mpjpe_mm == pytest.approx(10.0 * 20 / 21)
    with pytest.raises(ValueError, match="same shape"):
        metrics_3d(pred[:, :20], gt)
