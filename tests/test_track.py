"""utils.track.HandTracker with a fake predictor whose scores the test sets per frame."""

from __future__ import annotations

import numpy as np
import pytest

from utils.localize import Detection
from utils.predictor import HandPrediction
from utils.track import HandTracker, TrackConfig


def hand(center_x: float, side: str = "right", size: float = 40.0) -> HandPrediction:
    """A hand whose keypoints span a square of ``size`` px around (center_x, 100)."""
    rng = np.random.default_rng(int(center_x))
    kp = rng.uniform(-size / 2, size / 2, size=(21, 2)) + [center_x, 100.0]
    kp[0] = [center_x - size / 2, 100.0 - size / 2]
    kp[1] = [center_x + size / 2, 100.0 + size / 2]
    return HandPrediction(side=side, box_xywh=np.zeros(4), affine=np.eye(3), kp2d_px=kp,
                          scores=np.full(21, 0.8), log_likelihood=None,
                          mask_prob=np.zeros((4, 4), np.float32), side_source="model",
                          side_confidence=0.9)  # fmt: skip


class FakePredictor:
    """predict() moves every hand 2 px right per call and scores it ``score_of(frame)``."""

    def __init__(self, score_of) -> None:
        self.score_of = score_of
        self.calls: list[tuple[int, list[np.ndarray], list[str]]] = []

    def predict(self, frame, boxes, sides):
        index = int(frame[0, 0, 0])
        self.calls.append((index, [np.asarray(b) for b in boxes], list(sides)))
        out = []
        for box, side in zip(boxes, sides, strict=True):
            center_x = box[0] - 0.5 + box[2] / 2 + 2.0
            pred = hand(center_x, side)
            pred.scores = np.full(21, self.score_of(index))
            out.append(pred)
        return out


class FakeDetect:
    """The 'full detection': the hands it is given, scored 0.8; records the frames."""

    def __init__(self, hands_of) -> None:
        self.hands_of = hands_of
        self.frames: list[int] = []

    def __call__(self, frame) -> Detection:
        index = int(frame[0, 0, 0])
        self.frames.append(index)
        hands = self.hands_of(index)
        return Detection(hands=hands, hand_scores=[0.8] * len(hands),
                         score_name="heatmap_peak_mean", min_score=0.3)  # fmt: skip


def frame(index: int) -> np.ndarray:
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, 0, 0] = index
    return image


def run(tracker: HandTracker, frames: int) -> list:
    return [tracker.step(frame(i)) for i in range(frames)]


def test_high_confidence_keeps_tracking_from_the_previous_keypoints() -> None:
    predictor = FakePredictor(lambda i: 0.8)
    detect = FakeDetect(lambda i: [hand(100.0, "left")])
    tracker = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3,
                          TrackConfig(redetect_every=0))  # fmt: skip
    results = run(tracker, 5)
    assert detect.frames == [0] and tracker.detections == 1
    assert [r.detected for r in results] == [True, False, False, False, False]
    # Each frame's box is the previous frame's keypoint box; the side stays the detected one.
    previous = detect.hands_of(0)[0]
    assert [index for index, _, _ in predictor.calls] == [1, 2, 3, 4]
    for (_, boxes, sides), result in zip(predictor.calls, results[1:], strict=True):
        np.testing.assert_allclose(boxes[0], previous.keypoint_box_xywh)
        assert sides == ["left"] and result.hands[0].side == "left"
        assert result.hands[0].side_confidence == 0.9
        previous = result.hands[0]
    assert results[-1].hands[0].keypoint_box_xywh[0] == pytest.approx(80.5 + 4 * 2.0)


def test_a_drop_in_confidence_runs_the_detection_again() -> None:
    predictor = FakePredictor(lambda i: 0.1 if i == 3 else 0.8)
    detect = FakeDetect(lambda i: [hand(100.0)])
    tracker = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3,
                          TrackConfig(redetect_every=0))  # fmt: skip
    results = run(tracker, 6)
    assert detect.frames == [0, 3]
    assert [r.detected for r in results] == [True, False, False, True, False, False]


def test_own_track_threshold_and_periodic_detection() -> None:
    predictor = FakePredictor(lambda i: 0.5)
    detect = FakeDetect(lambda i: [hand(100.0)])
    strict = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3,
                         TrackConfig(redetect_every=0, min_track_score=0.6))  # fmt: skip
    run(strict, 3)
    assert detect.frames == [0, 1, 2]  # 0.5 < 0.6: every tracked frame is lost
    detect = FakeDetect(lambda i: [hand(100.0)])
    periodic = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3,
                           TrackConfig(redetect_every=3))  # fmt: skip
    run(periodic, 8)
    assert detect.frames == [0, 3, 6]


def test_no_hand_and_no_tracking_detect_every_frame() -> None:
    predictor = FakePredictor(lambda i: 0.8)
    detect = FakeDetect(lambda i: [])
    tracker = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3, TrackConfig())
    assert [r.hands for r in run(tracker, 3)] == [[], [], []]
    assert detect.frames == [0, 1, 2] and predictor.calls == []
    detect = FakeDetect(lambda i: [hand(100.0)])
    off = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3, TrackConfig(enabled=False))
    run(off, 4)
    assert detect.frames == [0, 1, 2, 3] and predictor.calls == []


def test_tracks_on_the_same_hand_are_merged() -> None:
    predictor = FakePredictor(lambda i: 0.8)
    detect = FakeDetect(lambda i: [hand(100.0), hand(101.0), hand(300.0)])
    tracker = HandTracker(predictor, detect, "heatmap_peak_mean", 0.3,
                          TrackConfig(redetect_every=0))  # fmt: skip
    first, second = run(tracker, 2)
    assert len(first.hands) == 3 and len(second.hands) == 2
    assert not second.detected


def test_bad_track_values() -> None:
    with pytest.raises(ValueError, match="--redetect_every must be >= 0"):
        HandTracker(FakePredictor(lambda i: 1.0), FakeDetect(lambda i: []), "x", 0.3,
                    TrackConfig(redetect_every=-1))  # fmt: skip
    with pytest.raises(ValueError, match="--min_track_score must be finite"):
        TrackConfig(min_track_score=float("nan")).check()
