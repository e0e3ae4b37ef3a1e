"""utils.localize: box maths by hand, boxes from synthetic masks, the coarse views, and the
whole pipeline on a fake backend that sees red squares as hands."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.fake_backends import image_with_squares, red_square_predictor
from utils.confidence import Calibration, PlattMap
from utils.crop import crop_to_original, warp_mask
from utils.localize import (
    DetectConfig,
    box_iou,
    box_nesting,
    boxes_from_mask,
    coarse_affines,
    detect_hands,
    grid_box_to_original,
    nms,
    read_hands,
    resolve_hand_score,
    select_hands,
)
from utils.predictor import PredictorError


def test_box_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[5, 0, 10, 10], [0, 0, 10, 10], [20, 20, 5, 5], [2, 2, 0, 0]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 1.0, 0.0, 0.0]])


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [5, 0, 10, 10]])
    scores = np.array([0.6, 0.9, 0.5, 0.95])
    # 3 (0.95) first; 1 overlaps it by 54/146 = 0.37 > 0.3, so it goes; 0 overlaps 3 by 1/3.
    assert nms(boxes, scores, 0.3) == [3, 2]
    assert nms(boxes, scores, 0.5) == [3, 1, 2]
    assert nms(boxes, scores, 1.0) == [3, 1, 0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.3) == []


def test_nested_boxes_are_one_hand() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[2, 2, 4, 4], [5, 0, 10, 10], [20, 20, 5, 5], [2, 2, 0, 0]])
    np.testing.assert_allclose(box_nesting(a, b), [[1.0, 0.5, 0.0, 0.0]])
    # A small box inside a big one: IoU 0.16 keeps both, the nesting rule keeps the better.
    boxes, scores = np.array([[0, 0, 10, 10], [2, 2, 4, 4]]), np.array([0.9, 0.95])
    assert nms(boxes, scores, 0.3) == [1, 0]
    assert nms(boxes, scores, 0.3, nesting_threshold=0.6) == [1]
    assert nms(boxes, scores, 0.3, nesting_threshold=1.0) == [1, 0]


def test_boxes_from_a_synthetic_mask() -> None:
    mask = np.zeros((32, 32))
    mask[4:10, 3:8] = 0.9  # cells x 3..7, y 4..9
    mask[20:30, 15:28] = 0.7
    mask[0, 31] = 1.0  # one cell: below min_cells
    found = boxes_from_mask(mask, threshold=0.5, min_cells=2)
    assert len(found) == 2
    (box_a, score_a), (box_b, score_b) = found
    np.testing.assert_array_equal(box_a, [3, 4, 5, 6])
    np.testing.assert_array_equal(box_b, [15, 20, 13, 10])
    assert score_a == pytest.approx(0.9) and score_b == pytest.approx(0.7)
    assert len(boxes_from_mask(mask, threshold=0.5, min_cells=1)) == 3


def test_a_mask_box_maps_back_to_the_original_rectangle() -> None:
    width, height = 320, 240
    rect = (100, 40, 64, 96)  # pixels x 100..163, y 40..135
    original = np.zeros((height, width), np.uint8)
    original[40:136, 100:164] = 1
    affine = coarse_affines((width, height), 128, tiles=0, overlap=0.0)[0]
    grid = warp_mask(original, affine, 128, 32)
    (box_cells, _), = boxes_from_mask(grid.astype(float), 0.5, 1)
    box = grid_box_to_original(box_cells, affine, 128, 32)
    # One cell is 10 original pixels here (320 / 32).
    np.testing.assert_allclose(box, rect, atol=10.0)


def test_coarse_views_cover_the_image_with_overlapping_tiles() -> None:
    views = coarse_affines((400, 300), 128, tiles=2, overlap=0.25)
    assert len(views) == 5
    corners = np.array([[-0.5, -0.5], [127.5, 127.5]])
    whole = crop_to_original(corners, views[0])
    np.testing.assert_allclose(whole, [[-0.5, -50.5], [399.5, 349.5]])
    tiles = [crop_to_original(corners, v) for v in views[1:]]
    side = 400 / (2 - 0.25)
    for t in tiles:
        assert t[1, 0] - t[0, 0] == pytest.approx(side)
    # The tiles span the whole square; neighbours overlap by a quarter of a side.
    np.testing.assert_allclose(tiles[0][0], whole[0])
    np.testing.assert_allclose(tiles[3][1], whole[1])
    assert tiles[0][1, 0] - tiles[1][0, 0] == pytest.approx(0.25 * side)


def test_detect_finds_two_hands_and_keeps_max_hands() -> None:
    predictor = red_square_predictor()
    hands_xywh = [(40, 50, 50, 60), (220, 120, 60, 70)]
    image = image_with_squares(hands_xywh)
    # 2 x 2 tiles: none cuts a square (finer tiles propose cut squares too, which this
    # backend reads as smaller red areas; the default's test is below).
    det = detect_hands(predictor, image, DetectConfig(max_hands=2, tiles=2, max_proposals=6))
    assert det.score_name == "heatmap_peak_mean" and det.min_score == 0.3
    assert len(det.hands) == 2 and det.note is None
    found = sorted((h.keypoint_box_xywh for h in det.hands), key=lambda b: b[0])
    for box, (x, y, w, h) in zip(found, hands_xywh, strict=True):
        # The keypoint box of a red area of pixels x..x+w-1 spans [x, x + w - 1].
        np.testing.assert_allclose(box, [x + 0.5, y + 0.5, w - 1, h - 1], atol=1.5)
    assert all(s == pytest.approx(1.0, abs=0.05) for s in det.hand_scores)
    one = detect_hands(predictor, image, DetectConfig(max_hands=1))
    assert len(one.hands) == 1
    default = detect_hands(predictor, image, DetectConfig())
    assert len(default.hands) == 2 and len(default.proposals) > len(det.proposals)
    for hand, (x, y, w, h) in zip(sorted(default.hands, key=lambda h: h.kp2d_px[0, 0]),
                                  hands_xywh, strict=True):  # fmt: skip
        assert box_iou(hand.keypoint_box_xywh[None], np.array([[x, y, w, h]]))[0, 0] > 0.5


def test_no_hand_is_reported_as_such() -> None:
    predictor = red_square_predictor()
    det = detect_hands(predictor, image_with_squares([]), DetectConfig())
    assert det.hands == [] and det.proposals == []
    assert det.note.startswith("no hand found: the coarse passes proposed no box")
    # A hand that scores below the threshold: found by the coarse pass, then refused.
    det = detect_hands(predictor, image_with_squares([(100, 80, 60, 60)]),
                       DetectConfig(min_hand_score=1.5))  # fmt: skip
    assert det.hands == [] and det.candidates
    assert "below --min_hand_score 1.5" in det.note and "heatmap_peak_mean" in det.note


def test_a_small_hand_is_found_in_the_tiles() -> None:
    # 24 px in a 640 px image: 4.8 px (about one mask cell) in the whole view, 8.4 px in a
    # tile. Heatmap proposals are switched off (22 joints needed, there are 21) so that only
    # the mask proposes boxes.
    predictor = red_square_predictor()
    image = image_with_squares([(300, 200, 24, 24)], width=640, height=480)
    mask_only = {"min_peak_joints": 22, "min_mask_cells": 2}
    assert detect_hands(predictor, image, DetectConfig(tiles=0, **mask_only)).hands == []
    det = detect_hands(predictor, image, DetectConfig(tiles=2, **mask_only))
    assert len(det.hands) == 1 and all(p.view > 0 for p in det.proposals)
    np.testing.assert_allclose(det.hands[0].keypoint_box_xywh, [300.5, 200.5, 23, 23], atol=1.5)


def test_select_hands_thresholds_then_suppresses_overlaps() -> None:
    predictor = red_square_predictor()
    image = image_with_squares([(40, 40, 50, 50)])
    preds = predictor.predict(image, [(40, 40, 50, 50), (42, 42, 50, 50), (200, 100, 50, 50)],
                              "right")  # fmt: skip
    assert select_hands(preds, [0.9, 0.95, 0.1], 0.3, 5, 0.3) == [1]
    assert select_hands(preds, [0.9, 0.95, 0.4], 0.3, 5, 0.3) == [1, 2]
    assert select_hands(preds, [0.9, 0.95, 0.4], 0.3, 1, 0.3) == [1]


def test_presence_score_and_threshold() -> None:
    plain = red_square_predictor()
    assert resolve_hand_score(plain, DetectConfig()) == ("heatmap_peak_mean", 0.3)
    assert resolve_hand_score(plain, DetectConfig(min_hand_score=0.1)) == ("heatmap_peak_mean",
                                                                            0.1)
    calibrated = red_square_predictor(calibration=Calibration(
        hand_present=PlattMap("hand_mask_mean", 3.0, -1.0)))
    assert resolve_hand_score(calibrated, DetectConfig()) == ("hand_present", 0.5)
    flow = red_square_predictor(has_flow=True)
    with pytest.raises(PredictorError, match="give --min_hand_score"):
        resolve_hand_score(flow, DetectConfig(hand_score="flow_loglik"))
    with pytest.raises(PredictorError, match="not offered"):
        resolve_hand_score(plain, DetectConfig(hand_score="hand_present"))


class SpyPredictor:
    """A predictor that records the boxes and sides of each `predict` call."""

    def __init__(self, predictor) -> None:
        self.predictor, self.calls = predictor, []

    def predict(self, image, boxes, side):
        self.calls.append(([np.asarray(b, float) for b in boxes], side))
        return self.predictor.predict(image, boxes, side)


@pytest.mark.parametrize("refine", [0, 1, 2])
def test_each_refinement_reframes_on_the_last_pass_keypoints(refine: int) -> None:
    spy = SpyPredictor(red_square_predictor())
    image = image_with_squares([(100, 80, 60, 60)])
    proposal = np.array([70.0, 60.0, 60.0, 60.0])  # a box half off the hand
    hands = read_hands(spy, image, [proposal], None, refine)
    assert len(spy.calls) == refine + 1
    np.testing.assert_allclose(spy.calls[0][0][0], proposal)
    # Every pass before the last reads a right hand; the last decides the side.
    assert [side for _, side in spy.calls] == ["right"] * refine + [None]
    for (boxes, _), (next_boxes, _) in itertools.pairwise(spy.calls):
        (read,) = spy.predictor.predict(image, boxes, "right")
        np.testing.assert_allclose(next_boxes[0], read.keypoint_box_xywh)
    overlap = box_iou(hands[0].keypoint_box_xywh[None], np.array([[100, 80, 60, 60]]))[0, 0]
    assert overlap > 0.9


def test_config_check_names_the_option() -> None:
    with pytest.raises(ValueError, match="--max_hands must be >= 1, got 0"):
        DetectConfig(max_hands=0).check()
    with pytest.raises(ValueError, match="--nms_iou must be in"):
        DetectConfig(nms_iou=1.5).check()
    with pytest.raises(ValueError, match="--refine must be >= 0, got -1"):
        DetectConfig(refine=-1).check()
    DetectConfig().check()

