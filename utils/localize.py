"""Hands without a given box: coarse passes propose boxes, crop passes read the hands.

`detect_hands(predictor, image_rgb, config, side)`:

1. Coarse passes (one batch): the whole image letterboxed onto the model input (a square
   of its longer side, black padding), plus ``tiles`` x ``tiles`` overlapping squares at a
   second, finer scale (`coarse_affines`).
2. Proposals per view: the connected components (cv2, 8-connected) of the predicted hand
   mask above ``mask_threshold`` (`boxes_from_mask`) or, in a view whose mask shows none,
   the box of the joints whose heatmap peak reaches ``peak_threshold``
   (`box_from_heatmap_peaks`), mapped back to original pixels. Scored by their mean mask
   probability / mean peak.
3. Non-maximum suppression by IoU (`nms`), at most ``max_proposals``.
4. A crop pass per box (framed like training: crop_factor x the box), then ``refine``
   refinements (default 2, as MediaPipe's landmark passes): each a re-crop framed on the
   last pass's own keypoints. The side is decided on the last crop (the crop and its
   mirror, whichever the model scores higher) unless ``side`` forces it.
5. Each hand's presence score (`Predictor.hand_score`: the presence probe's P(hand) when the
   checkpoint has that probe, else the calibrated P(hand present) when it has that
   calibration, else the mean heatmap peak) must reach ``min_hand_score``; the
   hands left are suppressed by overlap of their keypoint boxes (IoU above ``nms_iou``, or
   a box mostly inside a better one's, `NESTED_HAND`) and the best ``max_hands`` kept.
   None left: "no hand found", with the reason in `Detection.note`.

Everything here is numpy and OpenCV on top of `utils.predictor.Predictor`; `nms`,
`box_iou`, `box_nesting` and `boxes_from_mask` are pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from utils.crop import crop_matrix, crop_to_original
from utils.geometry import rescale_px
from utils.predictor import HandPrediction, Predictor, PredictorError, points_box_xywh

# Presence thresholds used when --min_hand_score is not given, per score. Probabilities get
# 0.5; the uncalibrated mean heatmap peak / mask mean get 0.3 (a Gaussian target peaks at 1,
# so a read hand's peaks sit well above it; check it with bench/bench_detect.py).
DEFAULT_MIN_SCORES = {"presence_probe": 0.5, "hand_present": 0.5, "joint_confidence_mean": 0.5,
                      "heatmap_peak_mean": 0.3, "hand_mask_mean": 0.3}  # fmt: skip


# Two found hands whose keypoint boxes overlap by more than this share of the smaller box are
# one hand (a crop of part of a hand reads a small hand inside the whole one).
NESTED_HAND = 0.5


@dataclass(frozen=True)
class DetectConfig:
    """How hands are found without a box (run.py builds its flags from these defaults)."""

    max_hands: int = 2  # keep at most this many hands per image
    # Presence score of a hand (None: Predictor.hand_score) and its threshold (None:
    # DEFAULT_MIN_SCORES of that score; flow_loglik has none: give one).
    hand_score: str | None = None
    min_hand_score: float | None = None
    mask_threshold: float = 0.5  # coarse-pass mask probability that counts as hand
    min_mask_cells: int = 2  # smallest mask component (heatmap cells) that proposes a box
    peak_threshold: float = 0.3  # coarse-pass heatmap peak of a joint that proposes a box
    min_peak_joints: int = 6  # joints above peak_threshold needed for a heatmap proposal
    tiles: int = 4  # tiles per side of the second coarse scale (0 or 1: whole image only)
    tile_overlap: float = 0.25  # overlap of neighbouring tiles, fraction of a tile side
    nms_iou: float = 0.3  # boxes overlapping more than this (IoU) are the same hand
    max_proposals: int = 12  # crop passes per image at most
    refine: int = 2  # re-crops, each framed on the last crop pass's keypoints (0: none)

    def check(self) -> None:
        """Raise ValueError naming the option for values that cannot work."""
        if self.max_hands < 1:
            raise ValueError(f"--max_hands must be >= 1, got {self.max_hands}")
        for name in ("mask_threshold", "peak_threshold", "tile_overlap", "nms_iou"):
            value = getattr(self, name)
            high = 0.9 if name == "tile_overlap" else 1.0
            if not (math.isfinite(value) and 0.0 <= value <= high):
                raise ValueError(f"--{name} must be in [0, {high:g}], got {value}")
        for name, low in (("min_mask_cells", 1), ("min_peak_joints", 1), ("tiles", 0),
                          ("max_proposals", 1), ("refine", 0)):  # fmt: skip
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be >= {low}, got {getattr(self, name)}")
        if self.min_hand_score is not None and not math.isfinite(self.min_hand_score):
            raise ValueError(f"--min_hand_score must be finite, got {self.min_hand_score}")


@dataclass
class Proposal:
    """A candidate hand box from a coarse pass.

    Attributes:
        box_xywh: (4,) original pixels (`utils.predictor` box convention).
        score: mean mask probability of the component, or mean peak of the joints used.
        source: 'mask' or 'heatmap'.
        view: index of the coarse view (0: the whole image, then the tiles).
    """

    box_xywh: np.ndarray
    score: float
    source: str
    view: int


@dataclass
class Detection:
    """The hands found in one image.

    Attributes:
        hands: the kept hands, best presence score first.
        hand_scores: their presence scores.
        score_name: the presence score (`utils.predictor.PER_IMAGE_SCORES`).
        min_score: its threshold.
        proposals: the coarse passes' boxes after NMS.
        candidates: every hand read in a crop pass (before the threshold and NMS), with its
            score, for reports and the bench.
    """

    hands: list[HandPrediction]
    hand_scores: list[float]
    score_name: str
    min_score: float
    proposals: list[Proposal] = field(default_factory=list)
    candidates: list[tuple[HandPrediction, float]] = field(default_factory=list)

    @property
    def note(self) -> str | None:
        """Why no hand was found (None when one was)."""
        if self.hands:
            return None
        if not self.candidates:
            return ("no hand found: the coarse passes proposed no box (no hand-mask component "
                    "above --mask_threshold, no joints above --peak_threshold)")
        best = max(score for _, score in self.candidates)
        return (f"no hand found: the best of {len(self.candidates)} candidates scored "
                f"{best:.3g} on {self.score_name}, below --min_hand_score {self.min_score:g}")


# --- pure box maths ---------------------------------------------------------------------------


def _intersections(a_xywh: np.ndarray, b_xywh: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(N, M) intersection areas of two sets of (x, y, w, h) boxes, and their (N,), (M,)
    areas."""
    a = np.asarray(a_xywh, np.float64).reshape(-1, 4)
    b = np.asarray(b_xywh, np.float64).reshape(-1, 4)
    ax1, ay1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, None, 0], b[None, :, 0]),
                 0, None)  # fmt: skip
    ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, None, 1], b[None, :, 1]),
                 0, None)  # fmt: skip
    return iw * ih, a[:, 2] * a[:, 3], b[:, 2] * b[:, 3]


def box_iou(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of two sets of (x, y, w, h) boxes (0 for empty ones)."""
    inter, area_a, area_b = _intersections(a_xywh, b_xywh)
    union = area_a[:, None] + area_b[None] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_nesting(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """(N, M) intersection over the smaller box's area (1: one box lies inside the other;
    0 for empty boxes)."""
    inter, area_a, area_b = _intersections(a_xywh, b_xywh)
    smaller = np.minimum(area_a[:, None], area_b[None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(smaller > 0, inter / smaller, 0.0)


def nms(boxes_xywh: np.ndarray, scores: np.ndarray, iou_threshold: float,
        nesting_threshold: float | None = None) -> list[int]:  # fmt: skip
    """Greedy non-maximum suppression: indices kept, best score first.

    A box is dropped when its IoU with a better-scoring kept box exceeds ``iou_threshold``
    or, with ``nesting_threshold``, when the two boxes' `box_nesting` does (a box that lies
    mostly inside another). Ties keep the earlier box.
    """
    boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes for {len(scores)} scores")
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    iou = box_iou(boxes, boxes)
    nested = box_nesting(boxes, boxes) if nesting_threshold is not None else None
    kept: list[int] = []
    for i in order:
        if all(iou[i, k] <= iou_threshold
               and (nested is None or nested[i, k] <= nesting_threshold) for k in kept):
            kept.append(i)
    return kept


def boxes_from_mask(mask_prob: np.ndarray, threshold: float, min_cells: int
                    ) -> list[tuple[np.ndarray, float]]:  # fmt: skip
    """Connected components of a probability map above ``threshold`` as boxes.

    Args:
        mask_prob: (h, w) hand-mask probability.
        threshold: cells with a probability above it are hand.
        min_cells: smaller components are dropped.

    Returns:
        [(box (4,) in the map's cells, (x, y, w, h) with the module's box convention, so a
        component of cells x0..x1 spans [x0 - 0.5, x1 + 0.5]; mean probability of its cells)],
        largest score first.
    """
    prob = np.asarray(mask_prob, np.float64)
    binary = (prob > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    out = []
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < min_cells:
            continue
        out.append((np.array([x, y, w, h], np.float64), float(prob[labels == k].mean())))
    return sorted(out, key=lambda item: -item[1])


def grid_box_to_original(box_cells: np.ndarray, affine: np.ndarray, input_size: int,
                         grid_size: int) -> np.ndarray:  # fmt: skip
    """A box in heatmap cells of a view -> original pixels (through the view's affine).

    Cell ``c`` covers model-input pixels ``[c s - 0.5, (c + 1) s - 0.5]`` (``s`` = input /
    grid, the centre-aligned grids of `utils.heatmap`).
    """
    s = input_size / grid_size
    x, y, w, h = (float(v) for v in box_cells)
    # The box's continuous edges in cells, as model-input pixels (u = (g + 0.5) s - 0.5).
    edges_cells = np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]])
    orig = crop_to_original(rescale_px(edges_cells, s), affine)
    lo, hi = orig.min(axis=0), orig.max(axis=0)
    return np.array([lo[0] + 0.5, lo[1] + 0.5, hi[0] - lo[0], hi[1] - lo[1]])


def coarse_affines(image_wh: tuple[int, int], input_size: int, tiles: int,
                   overlap: float) -> list[np.ndarray]:  # fmt: skip
    """(3, 3) affines of the coarse views: the letterboxed whole image, then the tiles.

    The whole view is a square of the image's longer side L about its centre. The tiles are
    ``tiles`` x ``tiles`` squares of side ``L / (tiles - (tiles - 1) overlap)`` covering that
    square, neighbours overlapping by ``overlap`` of a side (none for tiles < 2).
    """
    width, height = image_wh
    longer = float(max(width, height))
    center = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    views = [crop_matrix(center, longer, input_size)]
    if tiles >= 2:
        side = longer / (tiles - (tiles - 1) * overlap)
        first = center - longer / 2.0 + side / 2.0
        step = (1.0 - overlap) * side
        for row in range(tiles):
            for col in range(tiles):
                c = first + np.array([col * step, row * step])
                views.append(crop_matrix(c, side, input_size))
    return views


def box_from_heatmap_peaks(kp2d_px: np.ndarray, scores: np.ndarray, threshold: float,
                           min_joints: int) -> tuple[np.ndarray, float] | None:  # fmt: skip
    """Box of the joints whose peak reaches ``threshold`` and their mean peak, or None when
    fewer than ``min_joints`` do."""
    strong = np.asarray(scores) >= threshold
    if strong.sum() < min_joints:
        return None
    return points_box_xywh(np.asarray(kp2d_px)[strong]), float(np.mean(np.asarray(scores)[strong]))


# --- the pipeline -----------------------------------------------------------------------------


def resolve_hand_score(predictor: Predictor, config: DetectConfig) -> tuple[str, float]:
    """(presence score name, threshold) of a predictor under a config; clear errors."""
    name = config.hand_score or predictor.hand_score
    if name not in predictor.available_scores:
        raise PredictorError(f"--hand_score {name!r} is not offered by this model/checkpoint; "
                             f"it offers {', '.join(predictor.available_scores)}")
    if config.min_hand_score is not None:
        return name, float(config.min_hand_score)
    if name not in DEFAULT_MIN_SCORES:
        raise PredictorError(f"--hand_score {name} has no default threshold (its scale depends "
                             f"on the model): give --min_hand_score")
    return name, DEFAULT_MIN_SCORES[name]


def propose_boxes(predictor: Predictor, image_rgb: np.ndarray,
                  config: DetectConfig) -> list[Proposal]:  # fmt: skip
    """Boxes of the coarse passes, after NMS (best first, at most max_proposals)."""
    height, width = image_rgb.shape[:2]
    size = predictor.cfg.input_size
    affines = coarse_affines((width, height), size, config.tiles, config.tile_overlap)
    views = predictor.predict_affines(image_rgb, affines, ["right"] * len(affines),
                                      [np.array([0.0, 0.0, width, height])] * len(affines))
    proposals: list[Proposal] = []
    for v, (view, affine) in enumerate(zip(views, affines, strict=True)):
        grid = view.mask_prob.shape[-1]
        components = boxes_from_mask(view.mask_prob, config.mask_threshold,
                                     config.min_mask_cells)  # fmt: skip
        for box_cells, score in components:
            box = grid_box_to_original(box_cells, affine, size, grid)
            proposals.append(Proposal(box, score, "mask", v))
        # The heatmaps have one peak per joint for the whole view, which can fall on two
        # hands: their box is only a fallback for a view whose mask shows no hand.
        peaks = None if components else box_from_heatmap_peaks(
            view.kp2d_px, view.scores, config.peak_threshold, config.min_peak_joints)
        if peaks is not None:
            proposals.append(Proposal(peaks[0], peaks[1], "heatmap", v))
    proposals = [p for p in proposals if _box_touches_image(p.box_xywh, width, height)]
    if not proposals:
        return []
    kept = nms(np.stack([p.box_xywh for p in proposals]), np.array([p.score for p in proposals]),
               config.nms_iou)  # fmt: skip
    return [proposals[i] for i in kept[:config.max_proposals]]


def _box_touches_image(box_xywh: np.ndarray, width: int, height: int) -> bool:
    """A box at least partly inside the image (the letterbox padding holds no hand)."""
    x, y, w, h = box_xywh
    return x < width and y < height and x + w > 0 and y + h > 0


def read_hands(predictor: Predictor, image_rgb: np.ndarray, boxes_xywh: Sequence[np.ndarray],
               side: str | None, refine: int) -> list[HandPrediction]:  # fmt: skip
    """A crop pass per box, then ``refine`` re-crops, each framed on the last pass's
    keypoints; the side is decided on the last pass unless ``side`` forces it."""
    if not len(boxes_xywh):
        return []
    boxes = list(boxes_xywh)
    for _ in range(refine):
        boxes = [p.keypoint_box_xywh for p in predictor.predict(image_rgb, boxes, side or "right")]
    return predictor.predict(image_rgb, boxes, side)


def select_hands(candidates: Sequence[HandPrediction], scores: Sequence[float], min_score: float,
                 max_hands: int, nms_iou: float) -> list[int]:  # fmt: skip
    """Indices of the hands kept: score >= min_score, NMS on keypoint boxes (a hand whose
    box lies mostly inside a better one's is the same hand read from a part of it,
    `NESTED_HAND`), best max_hands."""
    ok = [i for i, s in enumerate(scores) if s >= min_score]
    if not ok:
        return []
    boxes = np.stack([candidates[i].keypoint_box_xywh for i in ok])
    kept = nms(boxes, np.asarray([scores[i] for i in ok]), nms_iou, NESTED_HAND)
    return [ok[k] for k in kept[:max_hands]]


def detect_hands(predictor: Predictor, image_rgb: np.ndarray, config: DetectConfig,
                 side: str | None = None) -> Detection:  # fmt: skip
    """Find up to ``config.max_hands`` hands in an image (module docstring).

    Args:
        predictor: the model.
        image_rgb: (H, W, 3) uint8 RGB.
        config: thresholds and passes.
        side: 'left' / 'right' forces every hand's side; None lets the model decide.

    Returns:
        A `Detection` (empty `hands` and a `note` when no hand was found).
    """
    score_name, min_score = resolve_hand_score(predictor, config)
    proposals = propose_boxes(predictor, image_rgb, config)
    # Candidates are read on the plain crop; the test-time views read the chosen hands only
    # (their crops again, the side decided over the views).
    hands = read_hands(predictor.without_views(), image_rgb, [p.box_xywh for p in proposals],
                       side, config.refine)  # fmt: skip
    scores = [h.score(score_name) for h in hands]
    kept = select_hands(hands, scores, min_score, config.max_hands, config.nms_iou)
    chosen = [hands[i] for i in kept]
    if predictor.views is not None and chosen:
        chosen = predictor.predict(image_rgb, [h.box_xywh for h in chosen], side)
    return Detection(hands=chosen, hand_scores=[h.score(score_name) for h in chosen],
                     score_name=score_name, min_score=min_score, proposals=proposals,
                     candidates=list(zip(hands, scores, strict=True)))  # fmt: skip
