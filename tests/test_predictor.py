"""utils.predictor: crop framing, the mirror-side decision, batching, the torch path and
calibration (fake backends where the outputs must be controlled, a tiny random model
otherwise)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from datasets.transforms import CropConfig, compute_crop
from models import ModelConfig, build_model, prepare_for_inference
from tests.fake_backends import image_with_squares, red_square_predictor
from utils.confidence import Calibration, PlattMap
from utils.crop import apply_affine, crop_to_original, warp_image
from utils.demo import draw_hands
from utils.heatmap import HeatmapCodec
from utils.localize import Detection
from utils.predictor import (
    Predictor,
    PredictorError,
    choose_side,
    crop_affine,
    points_box_xywh,
)


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_crop_framed_on_the_keypoint_box_is_the_training_crop(side: str) -> None:
    rng = np.random.default_rng(1)
    kp = rng.uniform([40, 30], [250, 200], size=(21, 2))
    geo = compute_crop(kp, None, None, (320, 240), flip=side == "left",
                       crop=CropConfig(out_size=128, factor=1.5))  # fmt: skip
    ours = crop_affine((320, 240), points_box_xywh(kp), side, 1.5, 128)
    np.testing.assert_allclose(ours, geo.affine, atol=1e-9)


def test_box_centre_goes_to_the_crop_centre_and_the_side_is_factor_times_the_box() -> None:
    affine = crop_affine((640, 480), (100, 50, 80, 40), "right", 2.0, 128)
    # The box's continuous extent [99.5, 179.5] x [49.5, 89.5]: centre (139.5, 69.5).
    np.testing.assert_allclose(apply_affine(affine, [139.5, 69.5]), [63.5, 63.5])
    assert affine[0, 0] == pytest.approx(128 / 160)  # crop side 2 x 80 px
    with pytest.raises(PredictorError, match="'left' or 'right'"):
        crop_affine((640, 480), (0, 0, 10, 10), "up", 2.0, 128)


def test_keypoints_come_back_in_original_pixels_for_both_sides() -> None:
    predictor = red_square_predictor()
    image = image_with_squares([(150, 60, 50, 70)])
    red_lo, red_hi = np.array([150.0, 60.0]), np.array([199.0, 129.0])
    for side in ("right", "left"):
        (pred,) = predictor.predict(image, [(140, 50, 70, 90)], side)
        # The fake's first four keypoints are the red box's corners (within a crop pixel).
        corners = pred.kp2d_px[:4]
        px = 1.0 / abs(pred.affine[0, 0])  # original pixels per crop pixel
        assert np.abs(corners.min(axis=0) - red_lo).max() < 1.5 * px
        assert np.abs(corners.max(axis=0) - red_hi).max() < 1.5 * px
        assert pred.side == side and pred.side_source == "given"
        assert pred.heatmap_peak_mean == pytest.approx(1.0, abs=0.05)


def test_the_model_picks_the_side_it_is_more_confident_about() -> None:
    # The fake's log-likelihood rises with red in the crop's left half: a red region left of
    # the box centre reads as a right hand; in the mirrored image it reads as a left hand.
    predictor = red_square_predictor(has_flow=True)
    assert predictor.side_score == "flow_loglik"
    image = image_with_squares([(100, 80, 30, 60)], width=320, height=240)
    box = (100, 80, 80, 60)
    (pred,) = predictor.predict(image, [box], None)
    assert pred.side == "right" and pred.side_source == "model"
    margin = pred.side_scores["right"] - pred.side_scores["left"]
    assert margin > 1 and pred.side_confidence == pytest.approx(1 / (1 + math.exp(-margin)))
    mirrored = np.ascontiguousarray(image[:, ::-1])
    mirrored_box = (320 - 100 - 80, 80, 80, 60)
    (pred,) = predictor.predict(mirrored, [mirrored_box], None)
    assert pred.side == "left" and pred.side_confidence > 0.5
    # A forced side is kept whatever the scores say.
    (pred,) = predictor.predict(mirrored, [mirrored_box], "right")
    assert pred.side == "right" and pred.side_scores is None


def test_choose_side_probability_only_for_log_likelihoods() -> None:
    assert choose_side(-10.0, -12.0, "flow_loglik") == ("right", pytest.approx(0.8807970779))
    assert choose_side(0.2, 0.7, "heatmap_peak_mean") == ("left", None)
    assert choose_side(0.5, 0.5, "heatmap_peak_mean") == ("right", None)
    assert choose_side(float("nan"), 0.1, "hand_mask_mean")[0] == "left"


def test_batching_over_boxes_gives_the_same_predictions() -> None:
    image = image_with_squares([(20, 20, 40, 40), (200, 100, 60, 50)])
    boxes = [(10, 10, 60, 60), (190, 90, 80, 70), (0, 0, 320, 240), (100, 100, 20, 20)]
    small = red_square_predictor(max_batch=3)
    large = red_square_predictor()
    a = small.predict(image, boxes, None)
    b = large.predict(image, boxes, None)
    assert small.backend.calls == [3, 3, 2] and large.backend.calls == [8]
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.kp2d_px, q.kp2d_px)
        assert p.side == q.side


def test_torch_path_matches_a_hand_written_forward() -> None:
    torch.manual_seed(0)
    model = prepare_for_inference(build_model("small"))
    predictor = Predictor.from_model(model, {"crop_factor": 1.5})
    assert predictor.crop_factor == 1.5
    image = np.random.default_rng(2).integers(0, 255, size=(100, 150, 3), dtype=np.uint8)
    box = (30, 20, 60, 40)
    (pred,) = predictor.predict(image, [box], "left")
    affine = crop_affine((150, 100), box, "left", 1.5, 128)
    crop = warp_image(image, affine, 128).astype(np.float32) / 255.0
    with torch.no_grad():
        out = model(torch.from_numpy(crop.transpose(2, 0, 1).copy())[None])
    kp, scores = HeatmapCodec(128, 32).decode(out.heatmaps[-1].numpy())
    np.testing.assert_allclose(pred.kp2d_px, crop_to_original(kp[0], affine), atol=1e-4)
    np.testing.assert_allclose(pred.scores, scores[0], atol=1e-6)
    assert pred.log_likelihood == pytest.approx(float(out.flow.log_likelihood[0]), rel=1e-6)
    assert pred.joint_confidence is None and pred.hand_present is None
    record = json.loads(json.dumps(pred.to_dict()))
    assert record["side"] == "left" and len(record["keypoints"]) == 21
    assert "no calibration" in record["confidence_note"]


def residual_model() -> torch.nn.Module:
    """A tiny model with the residual flow head, its scales varying from joint to joint."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small", residual_flow=True))
    with torch.no_grad():
        model.residual.scale_mlp[-1].weight.normal_(std=0.5)
    return prepare_for_inference(model)


def test_the_residual_head_gives_each_joint_an_error_scale_in_image_pixels() -> None:
    model = residual_model()
    predictor = Predictor.from_model(model, {"crop_factor": 1.5})
    assert "residual_confidence_mean" in predictor.available_scores
    image = np.random.default_rng(4).integers(0, 255, size=(100, 150, 3), dtype=np.uint8)
    box = (30, 20, 60, 40)
    (pred,) = predictor.predict(image, [box], "left")
    crop = warp_image(image, crop_affine((150, 100), box, "left", 1.5, 128), 128)
    with torch.no_grad():
        out = model(torch.from_numpy(crop.astype(np.float32).transpose(2, 0, 1) / 255.0)[None])
    log_sigma = out.residual.log_sigma[0].double().numpy()
    assert np.ptp(log_sigma) > 0.1
    np.testing.assert_allclose(pred.residual_confidence, -log_sigma, rtol=1e-5)
    # sigma is a fraction of the crop's side: 1.5 x the box's longer side, 90 image pixels.
    np.testing.assert_allclose(pred.error_scale_px, np.exp(log_sigma) * 90.0, rtol=1e-5)
    record = json.loads(json.dumps(pred.to_dict()))
    assert record["error_scale_px"] == pytest.approx(np.round(pred.error_scale_px, 3).tolist())
    assert record["keypoints"][3]["error_scale_px"] == pytest.approx(pred.error_scale_px[3])
    assert record["residual_confidence_mean"] == pytest.approx(-log_sigma.mean())
    plain = Predictor.from_model(prepare_for_inference(build_model("small")))
    (without,) = plain.predict(image, [box], "left")
    assert without.error_scale_px is None and without.to_dict()["error_scale_px"] is None
    assert "residual_confidence_mean" not in plain.available_scores


def test_the_overlay_rings_each_joint_with_its_error_scale() -> None:
    predictor = Predictor.from_model(residual_model(), {"crop_factor": 1.5})
    image = np.zeros((200, 200, 3), np.uint8)
    (pred,) = predictor.predict(image, [(40, 40, 120, 120)], "right")
    plain = dataclasses.replace(pred, error_scale_px=None)
    with_rings = draw_hands(image, Detection([pred], [1.0], "heatmap_peak_mean", 0.5))
    without = draw_hands(image, Detection([plain], [1.0], "heatmap_peak_mean", 0.5))
    # The widest ring, away from the labels at the top: drawn only with the error scales.
    j = int(np.argmax(pred.error_scale_px))
    u, v = np.round(pred.kp2d_px[j]).astype(int)
    r = round(float(pred.error_scale_px[j]))
    ring = [(y, x) for y, x in ((v + r, u), (v - r, u), (v, u + r), (v, u - r))
            if 60 <= y < 200 and 0 <= x < 200]  # fmt: skip
    assert ring and all(with_rings[y, x].max() > without[y, x].max() for y, x in ring)


def test_calibration_gives_joint_confidence_and_hand_present() -> None:
    torch.manual_seed(0)
    model = prepare_for_inference(build_model("small"))
    calibration = Calibration(joint=PlattMap("heatmap_peak", 4.0, -1.0),
                              hand_present=PlattMap("heatmap_peak_mean", 2.0, 0.5))
    predictor = Predictor.from_model(model, None, calibration)
    assert predictor.crop_factor == 2.0 and predictor.hand_score == "hand_present"
    image = np.random.default_rng(3).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    pred = predictor.predict_whole_image(image)
    np.testing.assert_allclose(pred.joint_confidence, 1 / (1 + np.exp(-(4 * pred.scores - 1))))
    assert pred.hand_present == pytest.approx(1 / (1 + np.exp(-(2 * pred.heatmap_peak_mean
                                                                 + 0.5))))
    assert pred.score("hand_present") == pred.hand_present
    np.testing.assert_array_equal(pred.box_xywh, [0, 0, 64, 64])


def test_bad_requests_name_what_was_wrong() -> None:
    predictor = red_square_predictor()
    image = image_with_squares([])
    with pytest.raises(PredictorError, match=r"\(H, W, 3\) uint8"):
        predictor.predict(image.astype(np.float32), [(0, 0, 10, 10)])
    with pytest.raises(PredictorError, match="2 sides for 1 boxes"):
        predictor.predict(image, [(0, 0, 10, 10)], ["left", "right"])
    with pytest.raises(PredictorError, match="'left', 'right' or None"):
        predictor.predict(image, [(0, 0, 10, 10)], "both")
    with pytest.raises(PredictorError, match="w, h >= 0"):
        predictor.predict(image, [(0, 0, -1, 10)])
    with pytest.raises(PredictorError, match="flow_loglik"):
        red_square_predictor(side_score="flow_loglik")
    with pytest.raises(PredictorError, match="hand_present"):
        predictor.predict(image, [(0, 0, 10, 10)])[0].score("hand_present")
    assert predictor.predict(image, np.zeros((0, 4))) == []
