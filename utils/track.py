"""Hands through a video: boxes carried from frame to frame, full detection when needed.

Per frame (`HandTracker.step`):

* With tracks from the previous frame and no re-detection due, each hand is read once, in a
  crop framed on its previous keypoints, with its previous side (no coarse pass, no mirror
  pass: one crop per hand). Tracks that end up on the same hand (keypoint boxes overlapping
  more than ``nms_iou``) are merged.
* The full detection (`utils.localize.detect_hands`) runs instead on the first frame, when a
  tracked hand's presence score drops below ``min_track_score``, when nothing is tracked,
  and every ``redetect_every`` frames (so a hand that enters the view is picked up), or on
  every frame when tracking is off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from utils.localize import Detection, nms
from utils.predictor import HandPrediction, Predictor


@dataclass(frozen=True)
class TrackConfig:
    """When a video frame runs the full detection (run.py's flags use these defaults)."""

    enabled: bool = True  # False: the full detection on every frame
    redetect_every: int = 30  # frames between full detections at most (0: only when lost)
    # A tracked hand scoring below this on the presence score is lost (None: the detection's
    # threshold).
    min_track_score: float | None = None
    nms_iou: float = 0.3  # tracks whose keypoint boxes overlap more are one hand

    def check(self) -> None:
        """Raise ValueError naming the option for values that cannot work."""
        if self.redetect_every < 0:
            raise ValueError(f"--redetect_every must be >= 0, got {self.redetect_every}")
        if self.min_track_score is not None and not math.isfinite(self.min_track_score):
            raise ValueError(f"--min_track_score must be finite, got {self.min_track_score}")


@dataclass
class FrameHands:
    """The hands of one frame.

    Attributes:
        hands: the hands (detection order, or track order).
        hand_scores: their presence scores.
        detected: this frame ran the full detection (False: tracked).
        note: why no hand was found, when none was.
    """

    hands: list[HandPrediction]
    hand_scores: list[float]
    detected: bool
    note: str | None = None


class HandTracker:
    """Carries hand boxes through consecutive frames (module docstring).

    Args:
        predictor: reads hands in given boxes (`Predictor.predict`).
        detect: the full detection of one frame (e.g. a `detect_hands` partial).
        score_name: the presence score.
        min_score: the detection's presence threshold.
        config: when to re-detect.
    """

    def __init__(self, predictor: Predictor, detect: Callable[[np.ndarray], Detection],
                 score_name: str, min_score: float, config: TrackConfig) -> None:  # fmt: skip
        config.check()
        self.predictor = predictor
        self.detect = detect
        self.score_name = score_name
        self.min_track_score = (min_score if config.min_track_score is None
                                else float(config.min_track_score))  # fmt: skip
        self.config = config
        self.tracks: list[HandPrediction] = []
        self.since_detect = 0
        self.detections = 0
        self.frames = 0

    def _due(self) -> bool:
        every = self.config.redetect_every
        return (not self.config.enabled or not self.tracks
                or (every > 0 and self.since_detect >= every))  # fmt: skip

    def _track(self, frame_rgb: np.ndarray) -> FrameHands | None:
        """Read each tracked hand in its carried box; None when one was lost."""
        boxes = [t.keypoint_box_xywh for t in self.tracks]
        preds = self.predictor.predict(frame_rgb, boxes, [t.side for t in self.tracks])
        scores = [p.score(self.score_name) for p in preds]
        if any(s < self.min_track_score for s in scores):
            return None
        for pred, track in zip(preds, self.tracks, strict=True):
            pred.side_source = track.side_source
            pred.side_scores = track.side_scores
            pred.side_score_name = track.side_score_name
            pred.side_confidence = track.side_confidence
        kept = nms(np.stack([p.keypoint_box_xywh for p in preds]), np.asarray(scores),
                   self.config.nms_iou)  # fmt: skip
        kept.sort()
        return FrameHands([preds[i] for i in kept], [scores[i] for i in kept], detected=False)

    def step(self, frame_rgb: np.ndarray) -> FrameHands:
        """The hands of the next frame."""
        self.frames += 1
        result = None if self._due() else self._track(frame_rgb)
        if result is None:
            det = self.detect(frame_rgb)
            self.detections += 1
            self.since_detect = 0
            result = FrameHands(det.hands, det.hand_scores, detected=True, note=det.note)
        self.since_detect += 1
        self.tracks = list(result.hands)
        return result
