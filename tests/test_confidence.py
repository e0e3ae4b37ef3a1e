"""Confidence metrics with hand-computed values: AUROC, ECE, failed images, the kept curve,
Platt calibration and the accumulator; joints drawn in confidence colours."""

from __future__ import annotations

import math

import numpy as np
import pytest

from utils.confidence import (
    Calibration,
    ConfidenceAccumulator,
    PlattMap,
    auroc,
    expected_calibration_error,
    failed_images,
    fit_platt,
    joint_correct,
    kept_fraction_curve,
    reliability_bins,
)
from utils.vis import confidence_colors, draw_skeleton, plot_kept_curves


def test_auroc_four_samples_by_hand() -> None:
    # Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 0.35 beats 0.1 only, 0.8 beats
    # both -> 3 of 4 pairs.
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.1, 0.4, 0.35, 0.8], [1, 1, 0, 0]) == pytest.approx(0.25)


def test_auroc_ties_count_one_half() -> None:
    # Positive 0.5 ties both negatives (2 x 1/2), positive 0.9 beats both: 3 / 4.
    assert auroc([0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1]) == pytest.approx(0.75)
    assert auroc([2.0, 2.0, 2.0], [1, 0, 1]) == pytest.approx(0.5)


def test_auroc_empty_class_is_nan_and_nan_scores_are_dropped() -> None:
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))
    assert math.isnan(auroc([], []))
    assert auroc([0.1, np.nan, 0.9], [0, 0, 1]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        auroc([1, 2, 3], [0, 1])


def test_ece_of_a_known_binning() -> None:
    # Bin [0, 0.1): p 0.05, 0 correct -> gap 0.05, share 1/4.
    # Bin [0.1, 0.2): p 0.15, 0.15, 1 of 2 correct -> gap 0.35, share 1/2.
    # Bin [0.9, 1.0]: p 0.95, correct -> gap 0.05, share 1/4.
    prob = [0.05, 0.15, 0.15, 0.95]
    correct = [False, True, False, True]
    assert expected_calibration_error(prob, correct) == pytest.approx(
        0.25 * 0.05 + 0.5 * 0.35 + 0.25 * 0.05
    )
    bins = reliability_bins(prob, correct)
    assert bins.count.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bins.accuracy[1] == pytest.approx(0.5) and math.isnan(bins.accuracy[5])


def test_ece_calibrated_bin_is_zero_and_one_lands_in_the_last_bin() -> None:
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0]) == pytest.approx(0.0)
    assert reliability_bins([1.0], [True]).count[-1] == 1
    assert expected_calibration_error([1.0, 0.0], [True, False]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        expected_calibration_error([1.5], [True])
    assert math.isnan(expected_calibration_error([], []))


def test_joint_correct_and_failed_images() -> None:
    norms = np.array([10.0, 10.0, 10.0, 0.0])
    nan = np.nan
    errors = np.array([
        [0.0, 1.0, 5.0, 9.0],  # 2 of 4 under 0.2 x 10 = 2 px: not fewer than half
        [0.0, 5.0, 5.0, 5.0],  # 1 of 4: failed
        [nan, nan, nan, nan],  # nothing scored: no label
        [0.0, 0.0, 0.0, 0.0],  # PCK box of size 0: not scored
    ])  # fmt: skip
    correct, scored = joint_correct(errors, norms)
    assert correct[0].tolist() == [True, True, False, False]
    assert scored.sum(axis=1).tolist() == [4, 4, 0, 0]
    failed, labelled = failed_images(errors, norms)
    assert failed.tolist() == [False, True, False, False]
    assert labelled.tolist() == [True, True, False, False]


def test_kept_fraction_curve_by_hand() -> None:
    # One joint per image: images 0 and 2 are right, 1 and 3 wrong; the score ranks the right
    # ones first, so keeping half keeps only right ones.
    errors = np.array([[0.0], [100.0], [0.0], [100.0]])
    norms = np.full(4, 10.0)
    curve = kept_fraction_curve([0.9, 0.1, 0.8, 0.2], errors, norms, fractions=(1.0, 0.5, 0.25))
    assert curve.num_kept.tolist() == [4, 2, 1]
    np.testing.assert_allclose(curve.pck, [0.5, 1.0, 1.0])
    np.testing.assert_allclose(curve.auc, [0.5 * 0.95, 0.95, 0.95])  # 0 px: 19 of 20 thresholds
    np.testing.assert_allclose(curve.min_score, [0.1, 0.8, 0.9])
    # A NaN score ranks last.
    curve = kept_fraction_curve([np.nan, 0.1, 0.8, 0.2], errors, norms, fractions=(0.25,))
    assert curve.pck.tolist() == [1.0] and curve.min_score.tolist() == [0.8]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        kept_fraction_curve([1.0], errors[:1], norms[:1], fractions=(0.0,))


def test_fit_platt_recovers_a_logistic_model() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(-3.0, 3.0, 20000)
    label = rng.random(score.size) < 1.0 / (1.0 + np.exp(-(2.0 * score - 1.0)))
    fit = fit_platt(score * 5.0 + 7.0, label, score="s")  # any affine scale of the score
    assert fit.a * 5.0 == pytest.approx(2.0, abs=0.1)
    assert fit.b + fit.a * 7.0 == pytest.approx(-1.0, abs=0.1)
    assert fit.num_samples == 20000
    prob = fit(score * 5.0 + 7.0)
    assert expected_calibration_error(prob, label) < 0.02


def test_fit_platt_separable_and_balanced_stays_finite() -> None:
    fit = fit_platt([0.0, 0.1, 0.2, 5.0], [False, False, False, True], score="s", balanced=True)
    assert math.isfinite(fit.a) and math.isfinite(fit.b) and fit.a > 0
    assert fit(np.array([0.0]))[0] < 0.5 < fit(np.array([5.0]))[0]
    with pytest.raises(ValueError, match="both outcomes"):
        fit_platt([0.0, 1.0], [True, True], score="s")


def test_calibration_round_trip_and_errors() -> None:
    cal = Calibration(joint=PlattMap("heatmap_peak", 3.0, -1.0, 10),
                      hand_present=PlattMap("flow_loglik", 0.01, 2.0, 20),
                      fitted_on={"dataset": "synth", "split": "val"})  # fmt: skip
    again = Calibration.from_dict(cal.to_dict(), "ckpt.pth.tar")
    assert again == cal
    assert Calibration.from_dict(None, "x") is None
    peaks = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(again.joint_confidence(peaks), 1 / (1 + np.exp(-(3 * peaks - 1))))
    with pytest.raises(ValueError, match="does not produce"):
        again.hand_probability({"heatmap_peak_mean": np.zeros(1)})
    bad = cal.to_dict()
    bad["joint"]["a"] = "steep"
    with pytest.raises(ValueError, match=r"ckpt.pth.tar \['joint'\]"):
        Calibration.from_dict(bad, "ckpt.pth.tar")
    bad = cal.to_dict()
    bad["joint"]["score"] = "flow_loglik"
    with pytest.raises(ValueError, match="must map 'heatmap_peak'"):
        Calibration.from_dict(bad, "ckpt.pth.tar")


def test_one_map_refit_keeps_the_other_and_its_record() -> None:
    old = Calibration(joint=PlattMap("heatmap_peak", 3.0, -1.0, 10),
                      hand_present=PlattMap("heatmap_peak_mean", 9.0, -4.0, 20),
                      fitted_on={"dataset": "coco", "split": "val"})  # the older single record
    new = Calibration(joint=PlattMap("heatmap_peak", 6.0, -1.5, 30),
                      hand_present=PlattMap("heatmap_peak_mean", 20.0, -8.0, 40),
                      fitted_on={"joint": {"dataset": "synth"}, "hand_present": {"dataset": "x"}})
    merged = old.with_maps(new, ["joint"])
    assert merged.joint == new.joint and merged.hand_present == old.hand_present
    assert merged.fitted_on == {"joint": {"dataset": "synth"},
                                "hand_present": {"dataset": "coco", "split": "val"}}
    assert old.with_maps(new, ["hand_present"]).joint == old.joint
    assert Calibration().with_maps(new, ["joint"]).hand_present is None
    with pytest.raises(ValueError, match="unknown calibration maps"):
        old.with_maps(new, ["mask"])


def test_accumulator_by_hand() -> None:
    acc = ConfidenceAccumulator(kept_fractions=(1.0, 0.5))
    norms = np.full(2, 10.0)
    # Batch 1: image 0 right on both joints, image 1 wrong on both (failed).
    acc.update(np.array([[0.0, 1.0], [50.0, 60.0]]), norms,
               image_scores={"s": np.array([2.0, 1.0])},
               joint_scores={"peak": np.array([[0.9, 0.8], [0.2, 0.1]])},
               joint_probs={"peak": np.array([[0.9, 0.8], [0.2, 0.1]])})  # fmt: skip
    # Batch 2: image 2 right on joint 0 only (1 of 2: not failed), image 3 has no label.
    acc.update(np.array([[0.0, 50.0], [np.nan, np.nan]]), norms,
               image_scores={"s": np.array([0.5, 9.0])},
               joint_scores={"peak": np.array([[0.7, 0.75], [0.5, 0.5]])},
               joint_probs={"peak": np.array([[0.7, 0.75], [0.5, 0.5]])})  # fmt: skip
    out = acc.compute(threshold=("s", 1.5))
    assert (out.num_images, out.num_failed, out.num_keypoints, out.num_correct_keypoints) == (
        3, 1, 6, 3)  # fmt: skip
    # Good images score 2.0 and 0.5, the failed one 1.0: 1 of 2 pairs.
    assert out.image_scores["s"].failure_auroc == pytest.approx(0.5)
    kept = out.image_scores["s"].kept
    assert kept.num_kept.tolist() == [3, 2]
    peak = out.joint_scores["peak"]
    # Correct keypoints 0.9, 0.8, 0.7 against wrong 0.2, 0.1, 0.75: 8 of 9 pairs.
    assert peak.auroc == pytest.approx(8 / 9)
    assert peak.per_joint_auroc[0] == pytest.approx(1.0)
    # Bins 9, 8, 2, 1 hold one keypoint each (gaps 0.1, 0.2, 0.2, 0.1); bin 7 holds 0.7
    # (right) and 0.75 (wrong): gap |0.725 - 0.5|, share 2/6.
    assert peak.ece == pytest.approx((0.1 + 0.2 + 0.2 + 0.1) / 6 + 2 / 6 * 0.225)
    # The oracle keeps the 2 images with the lowest error, 0 and 2: joint 0 right on both,
    # joint 1 on one -> PCK (1 + 0.5) / 2.
    assert out.oracle.pck[-1] == pytest.approx(0.75)
    assert out.threshold.num_kept == 1 and out.threshold.pck == pytest.approx(1.0)
    assert out.to_dict()["joint_scores"]["peak"]["reliability"]["count"][9] == 1
    with pytest.raises(ValueError, match="differ from the earlier"):
        acc.update(np.zeros((1, 2)), np.ones(1), image_scores={}, joint_scores={}, joint_probs={})
    with pytest.raises(ValueError, match="per-image scores"):
        acc.compute(threshold=("nope", 0.0))


def test_confidence_colours_and_skeleton_joint_colours(tmp_path) -> None:
    colors = confidence_colors(np.array([0.0, 0.5, 1.0, np.nan]))
    assert colors.tolist() == [[230, 0, 0], [230, 230, 0], [0, 230, 0], [230, 0, 0]]
    kp = np.stack([np.linspace(10, 50, 21), np.full(21, 30.0)], axis=1)
    kp[7] = [30.0, 50.0]  # away from the bones
    fill = np.zeros((21, 3), np.uint8)
    fill[7] = [0, 0, 255]
    image = draw_skeleton(np.zeros((64, 64, 3), np.uint8), kp, radius=4, joint_colors=fill)
    assert image[50, 30].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match=r"joint colours \(21, 3\)"):
        draw_skeleton(np.zeros((8, 8, 3), np.uint8), kp, joint_colors=fill[:3])
    path = plot_kept_curves({"s": ([1.0, 0.5], [0.4, 0.6], [0.3, None])}, tmp_path / "c.png")
    assert path.is_file()
