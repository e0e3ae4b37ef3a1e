"""How far to trust a prediction: confidence metrics as pure numpy functions, plus calibration.

Labels (from keypoint errors in original-image pixels, MMPose's PCK@0.2 box):
    joint correct   error < 0.2 x the longer side of the 1.2x ground-truth box (the PCK rule).
    image failed    fewer than half of its scored (visible) joints are correct. Images with no
                    scored joint have no label and are left out of every confidence metric.

Metrics:
    auroc           rank-based area under the ROC curve (Mann-Whitney U; ties count 1/2).
                    1 = every positive scores above every negative, 0.5 = chance.
    ECE             expected calibration error of a stated probability of "joint correct":
                    10 equal-width bins on [0, 1], sum over bins of (bin share) x |mean stated
                    probability - fraction correct|.
    kept curve      sort the images by a per-image score, keep the top fraction (1.0, 0.9, ...,
                    0.1) and report MMPose's PCK@0.2 and AUC of what is kept. A useful score
                    makes both rise as the kept fraction falls.

Calibration: a Platt map P = sigmoid(a * score + b), fitted by logistic regression, stored as
plain floats in a checkpoint (``ckpt['calibration'] = Calibration.to_dict()``). The joint map
turns the heatmap peak into P(joint correct); the hand map turns a per-image score into
P(a hand is in the crop).

Scores: `image_scores` and `joint_scores` name the per-image and per-joint scores a
prediction offers (higher = more trusted); the `utils.predictor.Predictor` computes them for
every crop it decodes, so the demo, the evaluator and the detector read the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import special, stats

from utils.geometry import rescale_px
from utils.metrics import MMPOSE_PCK_THR, auc_mmpose_from_errors, pck_from_errors

ECE_BINS = 10
FAILURE_JOINT_FRACTION = 0.5  # an image fails when fewer than this share of its joints is right
KEPT_FRACTIONS = tuple(round(1.0 - 0.1 * i, 1) for i in range(10))  # 1.0, 0.9, ..., 0.1
CALIBRATION_VERSION = 1
# The maps a calibration holds; `Calibration.fitted_on` keeps one record per map.
CALIBRATION_MAPS = ("joint", "hand_present")
JOINT_CALIBRATION_SCORE = "heatmap_peak"
NO_JOINT_CALIBRATION = (
    "no calibration in the checkpoint: per-joint confidence is not available (fit one with "
    "`python run.py --calibrate --split val ...`, README: Confidence)"
)
NO_HAND_CALIBRATION = (
    "no hand_present calibration in the checkpoint (fit one with `python run.py --calibrate "
    "--hand_vs_nohand ...`, README: Confidence)"
)


def _opt(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _opt_list(values: np.ndarray) -> list[float | None]:
    return [_opt(v) for v in np.asarray(values, np.float64).reshape(-1)]


# --- metrics ------------------------------------------------------------------------------


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (True = positive).

    Rank-based (Mann-Whitney U with average ranks), so tied scores count one half. Entries
    whose score is NaN are dropped.

    Args:
        scores: (N,) higher = more likely positive.
        labels: (N,) bool.

    Returns:
        AUROC in [0, 1]; NaN when either class is empty.
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.size} scores for {y.size} labels")
    keep = ~np.isnan(s)
    s, y = s[keep], y[keep]
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class ReliabilityBins:
    """Equal-width bins of a stated probability (a reliability diagram).

    Attributes:
        edges: (bins + 1,) bin edges on [0, 1].
        count: (bins,) samples per bin.
        mean_prob: (bins,) mean stated probability per bin (NaN when empty).
        accuracy: (bins,) fraction correct per bin (NaN when empty).
    """

    edges: np.ndarray
    count: np.ndarray
    mean_prob: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error; NaN without samples."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        filled = self.count > 0
        gap = np.abs(self.mean_prob[filled] - self.accuracy[filled])
        return float((self.count[filled] / total * gap).sum())

    def to_dict(self) -> dict[str, list]:
        return {"edges": _opt_list(self.edges), "count": [int(c) for c in self.count],
                "mean_prob": _opt_list(self.mean_prob), "accuracy": _opt_list(self.accuracy)}


def reliability_bins(prob: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
                     ) -> ReliabilityBins:  # fmt: skip
    """Bin stated probabilities (NaN dropped): bin i holds [i/bins, (i+1)/bins), the last
    bin also 1.0.

    Args:
        prob: (N,) stated probability of being correct, in [0, 1].
        correct: (N,) bool outcome.
        bins: number of equal-width bins.
    """
    p = np.asarray(prob, np.float64).reshape(-1)
    c = np.asarray(correct, bool).reshape(-1)
    if p.shape != c.shape:
        raise ValueError(f"reliability bins: {p.size} probabilities for {c.size} outcomes")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    keep = ~np.isnan(p)
    p, c = p[keep], c[keep]
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(
            f"stated probabilities must lie in [0, 1], got [{p.min():.4g}, {p.max():.4g}]"
        )
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=p, minlength=bins) / count
        accuracy = np.bincount(index, weights=c.astype(np.float64), minlength=bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), count, mean_prob, accuracy)


def expected_calibration_error(prob: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
                               ) -> float:  # fmt: skip
    """ECE of stated probabilities ``prob`` (N,) for outcomes ``correct`` (N,); NaN if empty."""
    return reliability_bins(prob, correct, bins).ece


def joint_correct(errors_px: np.ndarray, norms_px: np.ndarray, thr: float = MMPOSE_PCK_THR
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Which keypoints are within the PCK threshold.

    Args:
        errors_px: (N, K) errors, NaN where not scored.
        norms_px: (N,) PCK normaliser (box side); samples with norm <= 0 are not scored.
        thr: threshold as a fraction of the normaliser.

    Returns:
        (correct (N, K) bool, scored (N, K) bool); correct is False where not scored.
    """
    errors_px = np.asarray(errors_px, np.float64)
    norms_px = np.asarray(norms_px, np.float64).reshape(-1, 1)
    scored = ~np.isnan(errors_px) & (norms_px > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        correct = scored & (errors_px / norms_px < thr)
    return correct, scored


def failed_images(errors_px: np.ndarray, norms_px: np.ndarray, thr: float = MMPOSE_PCK_THR,
                  fraction: float = FAILURE_JOINT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Images with fewer than ``fraction`` of their scored joints correct.

    Returns:
        (failed (N,) bool, labelled (N,) bool: the image has at least one scored joint).
    """
    correct, scored = joint_correct(errors_px, norms_px, thr)
    num_scored = scored.sum(axis=1)
    labelled = num_scored > 0
    failed = labelled & (correct.sum(axis=1) < fraction * num_scored)
    return failed, labelled


@dataclass
class KeptCurve:
    """PCK and AUC of the images kept when the lowest-scoring ones are dropped.

    Attributes:
        fractions: (F,) kept fractions asked for.
        num_kept: (F,) images kept (round(fraction x N), at least 1).
        pck: (F,) MMPose PCK@thr of the kept images.
        auc: (F,) MMPose AUC (0-30 px) of the kept images.
        min_score: (F,) score of the last image kept (the threshold that keeps that many).
    """

    fractions: np.ndarray
    num_kept: np.ndarray
    pck: np.ndarray
    auc: np.ndarray
    min_score: np.ndarray

    def to_dict(self) -> dict[str, list]:
        return {"fractions": _opt_list(self.fractions),
                "num_kept": [int(n) for n in self.num_kept], "pck": _opt_list(self.pck),
                "auc": _opt_list(self.auc), "min_score": _opt_list(self.min_score)}


def rank_by_score(score: np.ndarray) -> np.ndarray:
    """Indices from the highest score to the lowest; NaN last, ties in input order."""
    key = np.asarray(score, np.float64).reshape(-1)
    key = np.where(np.isnan(key), -np.inf, key)
    return np.argsort(-key, kind="stable")


def kept_fraction_curve(
    score: np.ndarray,
    errors_px: np.ndarray,
    norms_px: np.ndarray,
    fractions: Sequence[float] = KEPT_FRACTIONS,
    thr: float = MMPOSE_PCK_THR,
) -> KeptCurve:
    """PCK/AUC of the images kept when dropping the lowest-``score`` ones (risk-coverage).

    Args:
        score: (N,) per-image confidence, higher = more trusted.
        errors_px: (N, K) errors in original pixels, NaN where not scored.
        norms_px: (N,) PCK normaliser per image.
        fractions: kept fractions in (0, 1].
        thr: PCK threshold.
    """
    score = np.asarray(score, np.float64).reshape(-1)
    errors_px = np.asarray(errors_px, np.float64)
    norms_px = np.asarray(norms_px, np.float64).reshape(-1)
    n = score.size
    if errors_px.shape[0] != n or norms_px.size != n:
        raise ValueError(
            f"kept curve: {n} scores, {errors_px.shape[0]} error rows, {norms_px.size} norms"
        )
    if n == 0:
        raise ValueError("kept curve: no images")
    fractions = np.asarray(fractions, np.float64)
    if np.any((fractions <= 0) | (fractions > 1)):
        raise ValueError(f"kept fractions must lie in (0, 1], got {fractions.tolist()}")
    order = rank_by_score(score)
    num_kept = np.maximum(1, np.round(fractions * n).astype(np.int64))
    pck, auc, min_score = [], [], []
    for k in num_kept:
        kept = order[:k]
        pck.append(pck_from_errors(errors_px[kept], norms_px[kept], thr)[0])
        auc.append(auc_mmpose_from_errors(errors_px[kept])[0])
        min_score.append(score[order[k - 1]])
    return KeptCurve(fractions, num_kept, np.array(pck), np.array(auc), np.array(min_score))


def normalized_image_error(errors_px: np.ndarray, norms_px: np.ndarray) -> np.ndarray:
    """(N,) mean over scored joints of error / PCK normaliser; NaN for unscored images.

    Minus this is the oracle score of the kept curve (drop the worst images first).
    """
    _, scored = joint_correct(errors_px, norms_px)
    norms = np.asarray(norms_px, np.float64).reshape(-1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scored, np.asarray(errors_px, np.float64) / norms, 0.0)
        return np.where(scored.any(axis=1), rel.sum(axis=1) / scored.sum(axis=1), np.nan)


# --- calibration --------------------------------------------------------------------------


@dataclass
class PlattMap:
    """P = sigmoid(a * score + b) for one named score.

    Attributes:
        score: name of the score it maps (e.g. 'heatmap_peak', 'flow_loglik').
        a, b: slope and offset (plain floats).
        num_samples: samples it was fitted on.
    """

    score: str
    a: float
    b: float
    num_samples: int = 0

    def __call__(self, score: np.ndarray) -> np.ndarray:
        return special.expit(self.a * np.asarray(score, np.float64) + self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "score": self.score, "a": float(self.a), "b": float(self.b),
                "num_samples": int(self.num_samples)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> PlattMap:
        if not isinstance(data, Mapping) or data.get("method") != "platt":
            raise ValueError(f"{where}: expected {{'method': 'platt', 'score', 'a', 'b'}}, "
                             f"got {data!r}")
        try:
            out = cls(str(data["score"]), float(data["a"]), float(data["b"]),
                      int(data.get("num_samples", 0)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: a Platt map needs 'score', 'a' and 'b' ({e})") from e
        if not (math.isfinite(out.a) and math.isfinite(out.b)):
            raise ValueError(f"{where}: non-finite Platt parameters a={out.a}, b={out.b}")
        return out


def fit_platt(scores: np.ndarray, labels: np.ndarray, *, score: str, balanced: bool = False,
              l2: float = 1e-4, max_iter: int = 100) -> PlattMap:
    """Fit P(label | score) = sigmoid(a * score + b) by Newton's method.

    Platt's smoothed targets ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)) and a small L2 penalty on
    the slope keep the fit finite when the classes are separable. The score is standardised
    for the fit and the result mapped back to the raw score.

    Args:
        scores: (N,) raw scores (NaN dropped).
        labels: (N,) bool outcomes.
        score: name stored with the map.
        balanced: weight the classes equally (the prior P = 0.5 at the decision point),
            e.g. for hand vs no hand, whose class ratio is set by the data we chose.
        l2: penalty on the standardised slope.
        max_iter: Newton iterations at most.
    """
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels, bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"calibration: {s.size} scores for {y.size} labels")
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"calibration of {score!r} needs both outcomes, got {n_pos} positive and {n_neg} "
            "negative samples"
        )
    mu = float(s.mean())
    sd = float(s.std()) or 1.0
    x = np.stack([(s - mu) / sd, np.ones_like(s)], axis=1)  # (N, 2)
    target = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    weight = np.where(y, 0.5 / n_pos, 0.5 / n_neg) if balanced else np.full(s.size, 1.0 / s.size)
    penalty = np.diag([l2, 0.0])
    w = np.zeros(2)
    for _ in range(max_iter):
        p = special.expit(x @ w)
        grad = x.T @ (weight * (p - target)) + penalty @ w
        hess = (x * (weight * p * (1.0 - p))[:, None]).T @ x + penalty + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    a = w[0] / sd
    return PlattMap(score=score, a=float(a), b=float(w[1] - a * mu), num_samples=int(s.size))


@dataclass
class Calibration:
    """The calibrated probabilities a checkpoint can carry (plain floats, see `to_dict`).

    Attributes:
        joint: heatmap peak -> P(joint within PCK@0.2), or None.
        hand_present: a per-image score -> P(a hand is in the crop), or None.
        fitted_on: what each map was fitted on (dataset/split, negatives), for the record:
            ``{map name: record}`` (files written before the maps could be refit one at a
            time hold one record for both).
    """

    joint: PlattMap | None = None
    hand_present: PlattMap | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": CALIBRATION_VERSION,
                "joint": None if self.joint is None else self.joint.to_dict(),
                "hand_present": None if self.hand_present is None else self.hand_present.to_dict(),
                "fitted_on": dict(self.fitted_on)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str) -> Calibration | None:
        """Parse ``ckpt['calibration']``; None stays None. Errors name ``where``."""
        if data is None:
            return None
        if not isinstance(data, Mapping) or "version" not in data:
            raise ValueError(f"{where}: calibration must be a dict with 'version', 'joint', "
                             f"'hand_present', got {type(data).__name__}")
        if int(data["version"]) > CALIBRATION_VERSION:
            raise ValueError(f"{where}: calibration version {data['version']} is newer than "
                             f"this code's {CALIBRATION_VERSION}")
        joint = data.get("joint")
        hand = data.get("hand_present")
        out = cls(
            joint=None if joint is None else PlattMap.from_dict(joint, f"{where} ['joint']"),
            hand_present=None if hand is None else PlattMap.from_dict(
                hand, f"{where} ['hand_present']"),
            fitted_on=dict(data.get("fitted_on") or {}),
        )  # fmt: skip
        if out.joint is not None and out.joint.score != JOINT_CALIBRATION_SCORE:
            raise ValueError(f"{where}: the joint calibration must map "
                             f"{JOINT_CALIBRATION_SCORE!r}, got {out.joint.score!r}")
        return out

    def with_maps(self, new: Calibration, maps: Sequence[str]) -> Calibration:
        """This calibration with ``maps`` (of `CALIBRATION_MAPS`) and their records taken
        from ``new``: a map refit on other data keeps the other map as it was."""
        unknown = sorted(set(maps) - set(CALIBRATION_MAPS))
        if unknown:
            raise ValueError(f"unknown calibration maps {unknown}; expected {CALIBRATION_MAPS}")
        kept, fitted = self.map_records(), new.map_records()
        records = {name: (fitted if name in maps else kept).get(name) for name in CALIBRATION_MAPS}
        return Calibration(
            joint=new.joint if "joint" in maps else self.joint,
            hand_present=new.hand_present if "hand_present" in maps else self.hand_present,
            fitted_on={k: v for k, v in records.items() if v is not None},
        )

    def map_records(self) -> dict[str, dict[str, Any]]:
        """``fitted_on`` as one record per map present (an older file's single record is
        the record of each of its maps)."""
        present = [n for n in CALIBRATION_MAPS if getattr(self, n) is not None]
        if set(self.fitted_on) <= set(CALIBRATION_MAPS):
            return {n: dict(self.fitted_on[n]) for n in present if n in self.fitted_on}
        return {n: dict(self.fitted_on) for n in present}

    def joint_confidence(self, heatmap_peak: np.ndarray) -> np.ndarray | None:
        """(..., K) heatmap peaks -> P(joint correct) in [0, 1], or None without a map."""
        return None if self.joint is None else self.joint(heatmap_peak)

    def hand_probability(self, image_scores: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """(N,) P(hand present) from the per-image score the map was fitted on, or None
        without a map; an error when that score is missing (e.g. a flow score, no flow)."""
        if self.hand_present is None:
            return None
        name = self.hand_present.score
        if name not in image_scores:
            raise ValueError(f"the hand_present calibration maps {name!r}, which this model "
                             f"does not produce (it has {sorted(image_scores)})")
        return self.hand_present(image_scores[name])


# --- the scores a prediction offers --------------------------------------------------------


def sample_map_at(maps: np.ndarray, kp_px: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinear samples of per-image maps at keypoints (centre-aligned, clamped to the map).

    Args:
        maps: (B, h, w) maps covering an image of ``image_size`` pixels.
        kp_px: (B, K, 2) keypoints (x, y) in that image's pixels.
        image_size: side of the image the keypoints refer to.

    Returns:
        (B, K) float64.
    """
    maps = np.asarray(maps, np.float64)
    b, h, w = maps.shape
    x = np.clip(rescale_px(kp_px[..., 0], w / image_size), 0, w - 1)
    y = np.clip(rescale_px(kp_px[..., 1], h / image_size), 0, h - 1)
    x = np.nan_to_num(x)
    y = np.nan_to_num(y)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    rows = np.arange(b)[:, None]
    top = maps[rows, y0, x0] * (1 - fx) + maps[rows, y0, x1] * fx
    bottom = maps[rows, y1, x0] * (1 - fx) + maps[rows, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def image_scores(peaks: np.ndarray, mask_prob: np.ndarray, log_likelihood: np.ndarray | None,
                 joint_confidence: np.ndarray | None,
                 residual_confidence: np.ndarray | None = None
                 ) -> dict[str, np.ndarray]:  # fmt: skip
    """The per-image confidence scores the model offers (higher = more trusted).

    Args:
        peaks: (B, K) heatmap maxima.
        mask_prob: (B, h, w) hand-mask probability.
        log_likelihood: (B,) flow log-likelihood, or None without a flow head.
        joint_confidence: (B, K) calibrated joint confidence, or None.
        residual_confidence: (B, K) -log sigma of the residual flow head, or None.

    Returns:
        name -> (B,): 'flow_loglik' (with a flow), 'heatmap_peak_mean', 'hand_mask_mean',
        'joint_confidence_mean' (with a calibration), 'residual_confidence_mean' (with the
        residual flow head).
    """
    out = {}
    if log_likelihood is not None:
        out["flow_loglik"] = np.asarray(log_likelihood, np.float64)
    out["heatmap_peak_mean"] = np.asarray(peaks, np.float64).mean(axis=1)
    out["hand_mask_mean"] = np.asarray(mask_prob, np.float64).reshape(len(peaks), -1).mean(axis=1)
    if joint_confidence is not None:
        out["joint_confidence_mean"] = np.asarray(joint_confidence, np.float64).mean(axis=1)
    if residual_confidence is not None:
        out["residual_confidence_mean"] = np.asarray(residual_confidence, np.float64).mean(axis=1)
    return out


def joint_scores(peaks: np.ndarray, kp_crop_px: np.ndarray, crop_size: int,
                 loglik_map: np.ndarray | None, joint_confidence: np.ndarray | None,
                 residual_confidence: np.ndarray | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """The per-joint scores and the stated probabilities among them.

    Returns:
        (name -> (B, K) score: 'heatmap_peak', 'flow_loglik_at_joint' (with a flow),
        'joint_confidence' (with a calibration), 'residual_confidence' (-log sigma, with the
        residual flow head); name -> (B, K) stated probability of 'joint
        correct': 'heatmap_peak' clipped to [0, 1], 'joint_confidence').
    """
    scores = {"heatmap_peak": np.asarray(peaks, np.float64)}
    probs = {"heatmap_peak": np.clip(scores["heatmap_peak"], 0.0, 1.0)}
    if loglik_map is not None:
        scores["flow_loglik_at_joint"] = sample_map_at(loglik_map, kp_crop_px, crop_size)
    if joint_confidence is not None:
        scores["joint_confidence"] = np.asarray(joint_confidence, np.float64)
        probs["joint_confidence"] = scores["joint_confidence"]
    if residual_confidence is not None:
        scores["residual_confidence"] = np.asarray(residual_confidence, np.float64)
    return scores, probs


def confidence_note(joint_confidence: object | None, hand_present: object | None
                    ) -> str | None:  # fmt: skip
    """Why a prediction carries no confidence or hand_present (None when it has both)."""
    notes = [note for value, note in ((joint_confidence, NO_JOINT_CALIBRATION),
                                      (hand_present, NO_HAND_CALIBRATION)) if value is None]
    return "; ".join(notes) or None


# --- accumulation over an evaluation ------------------------------------------------------


@dataclass
class ImageScoreReport:
    """One per-image score: how well it flags failed images and what dropping by it buys.

    Attributes:
        failure_auroc: AUROC of the score for 'image not failed' (high score = good image).
        kept: PCK/AUC of the images kept at each fraction.
    """

    failure_auroc: float | None
    kept: KeptCurve

    def to_dict(self) -> dict[str, Any]:
        return {"failure_auroc": self.failure_auroc, "kept": self.kept.to_dict()}


@dataclass
class JointScoreReport:
    """One per-joint score: AUROC for 'joint correct' and, for a probability, its ECE.

    Attributes:
        auroc: over all scored keypoints pooled.
        per_joint_auroc: (K,) per joint.
        ece: ECE (10 bins) of the stated probability, pooled; None for a score that is not a
            probability.
        per_joint_ece: (K,) or None.
        reliability: the pooled bins, or None.
    """

    auroc: float | None
    per_joint_auroc: list[float | None]
    ece: float | None = None
    per_joint_ece: list[float | None] | None = None
    reliability: ReliabilityBins | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reliability"] = None if self.reliability is None else self.reliability.to_dict()
        return out


@dataclass
class ThresholdReport:
    """Images kept at ``score >= threshold`` and their PCK/AUC."""

    score: str
    threshold: float
    num_kept: int
    fraction_kept: float
    pck: float | None
    auc: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ConfidenceSummary:
    """Everything :class:`ConfidenceAccumulator` reports (JSON-ready through `to_dict`).

    Attributes:
        num_images: images with at least one scored joint (the others have no label).
        num_failed: of those, images that failed.
        num_keypoints: scored keypoints.
        num_correct_keypoints: of those, keypoints within the PCK threshold.
        pck_thr: PCK threshold of the labels.
        failure_joint_fraction: an image fails below this share of correct joints.
        kept_fractions: fractions of the kept curves.
        image_scores: per-image score name -> report.
        joint_scores: per-joint score name -> report.
        oracle: kept curve when the worst images (by true error) are dropped first.
        threshold: what a confidence threshold keeps, when one was asked for.
    """

    num_images: int
    num_failed: int
    num_keypoints: int
    num_correct_keypoints: int
    pck_thr: float
    failure_joint_fraction: float
    kept_fractions: list[float]
    image_scores: dict[str, ImageScoreReport]
    joint_scores: dict[str, JointScoreReport]
    oracle: KeptCurve
    threshold: ThresholdReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_images": self.num_images, "num_failed": self.num_failed,
            "num_keypoints": self.num_keypoints,
            "num_correct_keypoints": self.num_correct_keypoints, "pck_thr": self.pck_thr,
            "failure_joint_fraction": self.failure_joint_fraction,
            "kept_fractions": list(self.kept_fractions),
            "image_scores": {k: v.to_dict() for k, v in self.image_scores.items()},
            "joint_scores": {k: v.to_dict() for k, v in self.joint_scores.items()},
            "oracle": self.oracle.to_dict(),
            "threshold": None if self.threshold is None else self.threshold.to_dict(),
        }  # fmt: skip


class ConfidenceAccumulator:
    """Collects per-batch errors and scores; `compute` gives a :class:`ConfidenceSummary`.

    Usage::

        acc = ConfidenceAccumulator()
        acc.update(errors_px, norms_px, image_scores={'flow_loglik': ll, ...},
                   joint_scores={'heatmap_peak': peaks, ...},
                   joint_probs={'heatmap_peak': np.clip(peaks, 0, 1), ...})
        summary = acc.compute()

    Every batch must give the same score names.
    """

    def __init__(self, pck_thr: float = MMPOSE_PCK_THR,
                 failure_joint_fraction: float = FAILURE_JOINT_FRACTION,
                 kept_fractions: Sequence[float] = KEPT_FRACTIONS, bins: int = ECE_BINS) -> None:
        self.pck_thr = pck_thr
        self.failure_joint_fraction = failure_joint_fraction
        self.kept_fractions = tuple(float(f) for f in kept_fractions)
        self.bins = bins
        self._errors: list[np.ndarray] = []
        self._norms: list[np.ndarray] = []
        self._image: dict[str, list[np.ndarray]] = {}
        self._joint: dict[str, list[np.ndarray]] = {}
        self._probs: dict[str, list[np.ndarray]] = {}

    def update(self, errors_px: np.ndarray, norms_px: np.ndarray, *,
               image_scores: Mapping[str, np.ndarray], joint_scores: Mapping[str, np.ndarray],
               joint_probs: Mapping[str, np.ndarray]) -> None:  # fmt: skip
        """Add a batch.

        Args:
            errors_px: (B, K) errors in original pixels, NaN where not scored.
            norms_px: (B,) PCK normaliser per image.
            image_scores: name -> (B,) per-image score (higher = more trusted).
            joint_scores: name -> (B, K) per-joint score.
            joint_probs: name -> (B, K) stated probability of 'joint correct' in [0, 1].
        """
        errors_px = np.asarray(errors_px, np.float64)
        batch = errors_px.shape[0]
        for kind, given, store, shape in (("image", image_scores, self._image, (batch,)),
                                          ("joint", joint_scores, self._joint, errors_px.shape),
                                          ("probability", joint_probs, self._probs,
                                           errors_px.shape)):  # fmt: skip
            if self._errors and set(given) != set(store):
                raise ValueError(f"{kind} scores {sorted(given)} differ from the earlier "
                                 f"batches' {sorted(store)}")
            for name, values in given.items():
                values = np.asarray(values, np.float64)
                if values.shape != shape:
                    raise ValueError(f"{kind} score {name!r}: expected shape {shape}, "
                                     f"got {values.shape}")
                store.setdefault(name, []).append(values)
        self._errors.append(errors_px)
        self._norms.append(np.asarray(norms_px, np.float64).reshape(-1))

    def __len__(self) -> int:
        return sum(e.shape[0] for e in self._errors)

    @property
    def num_labelled(self) -> int:
        """Images added so far that have at least one scored joint."""
        return sum(int(failed_images(e, n)[1].sum()) for e, n in zip(self._errors, self._norms,
                                                                     strict=True))

    def compute(self, threshold: tuple[str, float] | None = None) -> ConfidenceSummary:
        """The summary; ``threshold`` = (per-image score name, value) adds a ThresholdReport."""
        if not self._errors:
            raise ValueError("no samples were added to the confidence accumulator")
        errors = np.concatenate(self._errors)
        norms = np.concatenate(self._norms)
        failed, labelled = failed_images(errors, norms, self.pck_thr, self.failure_joint_fraction)
        if not labelled.any():
            raise ValueError("confidence metrics need at least one image with a scored joint")
        errors, norms, failed = errors[labelled], norms[labelled], failed[labelled]
        correct, scored = joint_correct(errors, norms, self.pck_thr)
        image_reports = {}
        image_values = {}
        for name, parts in self._image.items():
            values = np.concatenate(parts)[labelled]
            image_values[name] = values
            image_reports[name] = ImageScoreReport(
                failure_auroc=_opt(auroc(values, ~failed)),
                kept=kept_fraction_curve(values, errors, norms, self.kept_fractions,
                                         self.pck_thr),
            )  # fmt: skip
        joint_reports = {}
        for name in dict.fromkeys([*self._joint, *self._probs]):
            values = np.concatenate(self._joint[name] if name in self._joint
                                    else self._probs[name])[labelled]  # fmt: skip
            per_joint = [auroc(values[scored[:, j], j], correct[scored[:, j], j])
                         for j in range(errors.shape[1])]  # fmt: skip
            report = JointScoreReport(auroc=_opt(auroc(values[scored], correct[scored])),
                                      per_joint_auroc=_opt_list(np.array(per_joint)))
            if name in self._probs:
                probs = np.concatenate(self._probs[name])[labelled]
                bins = reliability_bins(probs[scored], correct[scored], self.bins)
                report.ece = _opt(bins.ece)
                report.reliability = bins
                report.per_joint_ece = _opt_list(np.array([
                    expected_calibration_error(probs[scored[:, j], j], correct[scored[:, j], j],
                                               self.bins)
                    for j in range(errors.shape[1])]))  # fmt: skip
            joint_reports[name] = report
        oracle = kept_fraction_curve(-normalized_image_error(errors, norms), errors, norms,
                                     self.kept_fractions, self.pck_thr)  # fmt: skip
        threshold_report = None
        if threshold is not None:
            threshold_report = self._threshold(threshold, image_values, errors, norms)
        return ConfidenceSummary(
            num_images=int(errors.shape[0]), num_failed=int(failed.sum()),
            num_keypoints=int(scored.sum()), num_correct_keypoints=int(correct.sum()),
            pck_thr=self.pck_thr, failure_joint_fraction=self.failure_joint_fraction,
            kept_fractions=list(self.kept_fractions), image_scores=image_reports,
            joint_scores=joint_reports, oracle=oracle, threshold=threshold_report,
        )  # fmt: skip

    def _threshold(self, threshold: tuple[str, float], image_values: Mapping[str, np.ndarray],
                   errors: np.ndarray, norms: np.ndarray) -> ThresholdReport:  # fmt: skip
        name, value = threshold
        if name not in image_values:
            raise ValueError(f"confidence threshold on {name!r}: this model's per-image scores "
                             f"are {sorted(image_values)}")
        with np.errstate(invalid="ignore"):
            keep = image_values[name] >= value
        num_kept = int(keep.sum())
        pck = auc = None
        if num_kept:
            pck = _opt(pck_from_errors(errors[keep], norms[keep], self.pck_thr)[0])
            auc = _opt(auc_mmpose_from_errors(errors[keep])[0])
        return ThresholdReport(score=name, threshold=float(value), num_kept=num_kept,
                               fraction_kept=num_kept / errors.shape[0], pck=pck, auc=auc)


__all__ = [
    "Calibration",
    "ConfidenceAccumulator",
    "ConfidenceSummary",
    "KeptCurve",
    "PlattMap",
    "ReliabilityBins",
    "auroc",
    "confidence_note",
    "expected_calibration_error",
    "failed_images",
    "fit_platt",
    "image_scores",
    "joint_correct",
    "joint_scores",
    "kept_fraction_curve",
    "reliability_bins",
    "sample_map_at",
]
