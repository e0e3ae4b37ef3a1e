"""2D keypoint metrics as pure numpy functions, plus a small accumulator.

Two protocols are reported side by side because papers mix them:

MMPose (RHD/OneHand10K configs of MMPose)
    PCK@thr: a keypoint is correct when its error is *strictly* below ``thr`` times the
    longer side of the ground-truth box (the box around the ground-truth keypoints inside
    the image, enlarged ``bbox_factor`` = 1.2x about its centre, as in MMPose's RHD
    annotation files). The score is the mean over joints of the per-joint accuracy.
    AUC: the mean of PCK at the 20 absolute thresholds 0, 1.5, ..., 28.5 px (``norm`` 30 px
    / ``num_thrs`` 20; error < threshold, so the first point is always 0).
    EPE: the mean error over all scored keypoints.

Zimmermann & Brox (``EvalUtil`` of hand3d, reused by BiHand)
    Per-joint PCK curves on ``linspace(0, 30, 20)`` px with error <= threshold; AUC of each
    curve by the trapezoid rule divided by the threshold range (30 px), averaged over
    joints. Mean EPE = mean of per-joint mean errors, median EPE = mean of per-joint
    median errors.

The two AUCs differ even for the same predictions: an error of 0 px scores 0.95 (MMPose,
the 0-px threshold is strict) versus 1.0 (Z&B); an error of 15 px scores 0.45 versus 0.5.

accH (BiHand's ``accuracy_heatmap``)
    Argmax of the predicted and the target heatmap on the heatmap grid; a joint is correct
    when the distance is below 0.5 * (heatmap width / 10) = 3.2 heatmap px on a 64 grid.
    BiHand's quirks are kept so numbers stay comparable: a target whose argmax lies in
    column 0 or row 0 is not scored, and a prediction whose maximum is <= 0 sits at (0, 0).

Only visible keypoints are scored; all coordinates are in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import stats

MMPOSE_PCK_THR = 0.2
MMPOSE_BBOX_FACTOR = 1.2
MMPOSE_AUC_NORM_PX = 30.0
MMPOSE_AUC_NUM_THRS = 20
ZB_THRESHOLDS_PX = np.linspace(0.0, 30.0, 20)
ACCH_THR = 0.5  # fraction of heatmap width / 10 (BiHand): 3.2 px on a 64 grid


def _check_keypoints(pred_px: np.ndarray, gt_px: np.ndarray, visible: np.ndarray) -> None:
    if pred_px.shape != gt_px.shape or pred_px.ndim != 3 or pred_px.shape[-1] != 2:
        raise ValueError(
            f"expected pred and gt keypoints of the same shape (N, K, 2), got "
            f"{pred_px.shape} and {gt_px.shape}"
        )
    if visible.shape != pred_px.shape[:2]:
        raise ValueError(f"expected visible of shape {pred_px.shape[:2]}, got {visible.shape}")


def keypoint_errors(pred_px: np.ndarray, gt_px: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Euclidean error per keypoint, NaN where the keypoint is not scored.

    Args:
        pred_px: (N, K, 2) predicted keypoints.
        gt_px: (N, K, 2) ground-truth keypoints.
        visible: (N, K) bool, which keypoints are scored.

    Returns:
        (N, K) float64 errors in the keypoints' unit, NaN where not visible.
    """
    pred_px, gt_px = np.asarray(pred_px, np.float64), np.asarray(gt_px, np.float64)
    visible = np.asarray(visible, bool)
    _check_keypoints(pred_px, gt_px, visible)
    err = np.linalg.norm(pred_px - gt_px, axis=-1)
    return np.where(visible, err, np.nan)


def gt_bbox_size(
    gt_px: np.ndarray, image_size_wh: np.ndarray, factor: float = MMPOSE_BBOX_FACTOR
) -> np.ndarray:
    """Longer side of MMPose's ground-truth box, per sample.

    The box spans the ground-truth keypoints that lie inside the image (whatever their
    visibility flag) and is enlarged ``factor`` times about its centre. This reproduces
    the ``bbox`` of MMPose's converted RHD annotations.

    Args:
        gt_px: (N, K, 2) ground-truth keypoints in image pixels.
        image_size_wh: (N, 2) or (2,) image width and height.
        factor: box enlargement.

    Returns:
        (N,) longer box side in pixels; 0 for a sample with no keypoint inside the image
        (such a sample is not scored by PCK).
    """
    gt_px = np.asarray(gt_px, np.float64)
    size = np.broadcast_to(np.asarray(image_size_wh, np.float64), (gt_px.shape[0], 2))
    inside = (
        (gt_px[..., 0] >= 0) & (gt_px[..., 0] < size[:, None, 0])
        & (gt_px[..., 1] >= 0) & (gt_px[..., 1] < size[:, None, 1])
    )  # fmt: skip
    lo = np.where(inside[..., None], gt_px, np.inf).min(axis=1)  # (N, 2)
    hi = np.where(inside[..., None], gt_px, -np.inf).max(axis=1)
    extent = np.where(inside.any(axis=1)[:, None], hi - lo, 0.0)
    return factor * extent.max(axis=1)


def _mean_of_joint_accuracies(correct: np.ndarray, valid: np.ndarray) -> tuple[float, np.ndarray]:
    """MMPose's averaging: per-joint accuracy, then the mean over joints that have data."""
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(count > 0, (correct & valid).sum(axis=0) / count, np.nan)
    scored = per_joint[~np.isnan(per_joint)]
    return (float(scored.mean()) if scored.size else 0.0), per_joint


def pck_from_errors(
    errors_px: np.ndarray, norm_px: np.ndarray, thr: float = MMPOSE_PCK_THR
) -> tuple[float, np.ndarray]:
    """MMPose PCK from an (N, K) error array (NaN = not scored).

    Args:
        errors_px: (N, K) errors, NaN where not scored.
        norm_px: (N,) normaliser per sample (box size); samples with norm <= 0 are skipped.
        thr: threshold as a fraction of ``norm_px``.

    Returns:
        (mean of per-joint accuracies, (K,) per-joint accuracy with NaN for joints never
        scored).
    """
    errors_px = np.asarray(errors_px, np.float64)
    norm_px = np.asarray(norm_px, np.float64).reshape(-1, 1)
    valid = ~np.isnan(errors_px) & (norm_px > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        correct = errors_px / norm_px < thr
    return _mean_of_joint_accuracies(correct, valid)


def pck_mmpose(
    pred_px: np.ndarray,
    gt_px: np.ndarray,
    visible: np.ndarray,
    norm_px: np.ndarray,
    thr: float = MMPOSE_PCK_THR,
) -> tuple[float, np.ndarray]:
    """MMPose PCK@thr (see module docstring); shapes as in :func:`keypoint_errors`."""
    return pck_from_errors(keypoint_errors(pred_px, gt_px, visible), norm_px, thr)


def mmpose_auc_thresholds_px(
    norm_px: float = MMPOSE_AUC_NORM_PX, num_thrs: int = MMPOSE_AUC_NUM_THRS
) -> np.ndarray:
    """The absolute thresholds MMPose's AUC averages over: 0, 1.5, ..., 28.5 px."""
    return norm_px * np.arange(num_thrs) / num_thrs


def auc_mmpose_from_errors(
    errors_px: np.ndarray,
    norm_px: float = MMPOSE_AUC_NORM_PX,
    num_thrs: int = MMPOSE_AUC_NUM_THRS,
) -> tuple[float, np.ndarray]:
    """MMPose AUC from (N, K) errors: mean of PCK (error < t) over the thresholds.

    Returns:
        (AUC, (num_thrs,) PCK at each threshold of :func:`mmpose_auc_thresholds_px`).
    """
    errors_px = np.asarray(errors_px, np.float64)
    valid = ~np.isnan(errors_px)
    curve = np.array(
        [
            _mean_of_joint_accuracies(errors_px < t, valid)[0]
            for t in mmpose_auc_thresholds_px(norm_px, num_thrs)
        ]
    )
    return float(curve.mean()), curve


def auc_mmpose(
    pred_px: np.ndarray,
    gt_px: np.ndarray,
    visible: np.ndarray,
    norm_px: float = MMPOSE_AUC_NORM_PX,
    num_thrs: int = MMPOSE_AUC_NUM_THRS,
) -> float:
    """MMPose AUC (see module docstring); shapes as in :func:`keypoint_errors`."""
    return auc_mmpose_from_errors(keypoint_errors(pred_px, gt_px, visible), norm_px, num_thrs)[0]


def epe_mmpose_from_errors(errors_px: np.ndarray) -> float:
    """MMPose EPE: the mean over all scored keypoints (0 when none is scored)."""
    scored = np.asarray(errors_px, np.float64)
    scored = scored[~np.isnan(scored)]
    return float(scored.mean()) if scored.size else 0.0


def epe_mmpose(pred_px: np.ndarray, gt_px: np.ndarray, visible: np.ndarray) -> float:
    """MMPose mean EPE; shapes as in :func:`keypoint_errors`."""
    return epe_mmpose_from_errors(keypoint_errors(pred_px, gt_px, visible))


@dataclass
class ZBResult:
    """Zimmermann & Brox measures. Per-joint arrays are NaN for joints never scored.

    Attributes:
        auc: mean over scored joints of the per-joint AUC.
        epe_mean_px: mean over joints of the per-joint mean error.
        epe_median_px: mean over joints of the per-joint median error.
        thresholds_px: (T,) thresholds of the PCK curves.
        pck_curve: (T,) PCK curve averaged over scored joints.
        per_joint_auc: (K,).
        per_joint_pck_curve: (K, T).
        per_joint_epe_mean_px: (K,).
        per_joint_epe_median_px: (K,).
    """

    auc: float
    epe_mean_px: float
    epe_median_px: float
    thresholds_px: np.ndarray
    pck_curve: np.ndarray
    per_joint_auc: np.ndarray
    per_joint_pck_curve: np.ndarray
    per_joint_epe_mean_px: np.ndarray
    per_joint_epe_median_px: np.ndarray


def zb_measures_from_errors(
    errors_px: np.ndarray, thresholds_px: np.ndarray = ZB_THRESHOLDS_PX
) -> ZBResult:
    """Zimmermann & Brox measures from (N, K) errors (NaN = not scored).

    Args:
        errors_px: (N, K) errors.
        thresholds_px: (T,) increasing thresholds; the AUC is normalised by their range.

    Returns:
        A :class:`ZBResult`.
    """
    errors_px = np.asarray(errors_px, np.float64)
    thresholds_px = np.asarray(thresholds_px, np.float64)
    if thresholds_px.ndim != 1 or thresholds_px.size < 2 or np.any(np.diff(thresholds_px) <= 0):
        raise ValueError(f"thresholds must be increasing with >= 2 values, got {thresholds_px}")
    num_joints = errors_px.shape[1]
    curves = np.full((num_joints, thresholds_px.size), np.nan)
    means = np.full(num_joints, np.nan)
    medians = np.full(num_joints, np.nan)
    for j in range(num_joints):
        err = errors_px[:, j]
        err = err[~np.isnan(err)]
        if err.size == 0:
            continue
        means[j], medians[j] = err.mean(), np.median(err)
        curves[j] = (err[:, None] <= thresholds_px[None, :]).mean(axis=0)
    span = thresholds_px[-1] - thresholds_px[0]
    aucs = np.trapezoid(curves, thresholds_px, axis=1) / span
    scored = ~np.isnan(means)
    if not scored.any():
        nan = float("nan")
        return ZBResult(nan, nan, nan, thresholds_px, np.full(thresholds_px.size, np.nan),
                        aucs, curves, means, medians)  # fmt: skip
    return ZBResult(
        auc=float(aucs[scored].mean()),
        epe_mean_px=float(means[scored].mean()),
        epe_median_px=float(medians[scored].mean()),
        thresholds_px=thresholds_px,
        pck_curve=curves[scored].mean(axis=0),
        per_joint_auc=aucs,
        per_joint_pck_curve=curves,
        per_joint_epe_mean_px=means,
        per_joint_epe_median_px=medians,
    )


def zb_measures(
    pred_px: np.ndarray,
    gt_px: np.ndarray,
    visible: np.ndarray,
    thresholds_px: np.ndarray = ZB_THRESHOLDS_PX,
) -> ZBResult:
    """Zimmermann & Brox measures; shapes as in :func:`keypoint_errors`."""
    return zb_measures_from_errors(keypoint_errors(pred_px, gt_px, visible), thresholds_px)


def heatmap_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax location of each heatmap.

    Args:
        heatmaps: (..., H, W).

    Returns:
        ((..., 2) float64 (x, y) in heatmap pixels, (...) maximum values).
    """
    heatmaps = np.asarray(heatmaps)
    width = heatmaps.shape[-1]
    flat = heatmaps.reshape(*heatmaps.shape[:-2], -1)
    idx = flat.argmax(axis=-1)
    xy = np.stack([idx % width, idx // width], axis=-1).astype(np.float64)
    return xy, np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]


def heatmap_argmax_errors(
    pred_heatmaps: np.ndarray, gt_heatmaps: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Per-joint argmax distance for BiHand's accH, NaN where BiHand does not score.

    Args:
        pred_heatmaps: (N, K, H, W) predicted heatmaps.
        gt_heatmaps: (N, K, H, W) target heatmaps.
        weights: (N, K) heatmap weights; 0 = not scored.

    Returns:
        (N, K) distances in heatmap pixels, NaN where the weight is 0 or the target's
        argmax lies in column 0 or row 0 (BiHand's rule).
    """
    if np.shape(pred_heatmaps) != np.shape(gt_heatmaps) or np.ndim(pred_heatmaps) != 4:
        raise ValueError(
            f"expected pred and gt heatmaps of the same shape (N, K, H, W), got "
            f"{np.shape(pred_heatmaps)} and {np.shape(gt_heatmaps)}"
        )
    pred_xy, pred_max = heatmap_argmax(pred_heatmaps)
    pred_xy = np.where((pred_max > 0)[..., None], pred_xy, 0.0)
    gt_xy, gt_max = heatmap_argmax(gt_heatmaps)
    gt_xy = np.where((gt_max > 0)[..., None], gt_xy, 0.0)
    valid = (np.asarray(weights) > 0) & (gt_xy[..., 0] >= 1) & (gt_xy[..., 1] >= 1)
    dist = np.linalg.norm(pred_xy - gt_xy, axis=-1)
    return np.where(valid, dist, np.nan)


def heatmap_accuracy_from_errors(
    errors_hm: np.ndarray, heatmap_width: int = 64, thr: float = ACCH_THR
) -> tuple[float, np.ndarray]:
    """accH from :func:`heatmap_argmax_errors`: error / (width / 10) < thr.

    Returns:
        (mean of per-joint accuracies over joints with data, (K,) per-joint accuracy).
    """
    errors_hm = np.asarray(errors_hm, np.float64)
    valid = ~np.isnan(errors_hm)
    with np.errstate(invalid="ignore"):
        correct = errors_hm / (heatmap_width / 10.0) < thr
    return _mean_of_joint_accuracies(correct, valid)


def heatmap_accuracy(
    pred_heatmaps: np.ndarray, gt_heatmaps: np.ndarray, weights: np.ndarray, thr: float = ACCH_THR
) -> tuple[float, np.ndarray]:
    """BiHand's accH; shapes as in :func:`heatmap_argmax_errors`."""
    errors = heatmap_argmax_errors(pred_heatmaps, gt_heatmaps, weights)
    return heatmap_accuracy_from_errors(errors, np.shape(pred_heatmaps)[-1], thr)


def per_sample_epe(errors_px: np.ndarray) -> np.ndarray:
    """(N,) mean error over each sample's scored keypoints; NaN for a sample with none."""
    errors_px = np.asarray(errors_px, np.float64)
    count = (~np.isnan(errors_px)).sum(axis=1)
    total = np.nansum(errors_px, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def loglik_epe_spearman(
    log_likelihood: np.ndarray, epe_px: np.ndarray
) -> tuple[float, float, int]:
    """Spearman rank correlation between per-sample log-likelihood and per-sample EPE.

    A useful likelihood is negatively correlated with the error (low likelihood warns of a
    bad prediction). Samples where either value is not finite are dropped.

    Args:
        log_likelihood: (N,) per-sample log-likelihood.
        epe_px: (N,) per-sample mean error.

    Returns:
        (rho, p-value, number of samples used); rho and p are NaN with fewer than 3 samples
        or a constant input.
    """
    ll = np.asarray(log_likelihood, np.float64).reshape(-1)
    epe = np.asarray(epe_px, np.float64).reshape(-1)
    if ll.shape != epe.shape:
        raise ValueError(f"log-likelihood {ll.shape} and EPE {epe.shape} differ in length")
    keep = np.isfinite(ll) & np.isfinite(epe)
    n = int(keep.sum())
    if n < 3 or np.ptp(ll[keep]) == 0 or np.ptp(epe[keep]) == 0:
        return float("nan"), float("nan"), n
    result = stats.spearmanr(ll[keep], epe[keep])
    return float(result.statistic), float(result.pvalue), n


@dataclass
class MetricInputs:
    """What a metric sees: every batch an accumulator was given, concatenated.

    Attributes:
        errors_px: (N, K) keypoint errors in original pixels (NaN where not scored).
        norms_px: (N,) the PCK normaliser of each sample (the enlarged GT box's longer side).
        pck_thr: the PCK threshold, a fraction of ``norms_px``.
        zb_thresholds_px: the Zimmermann & Brox curve's thresholds.
        heatmap_errors_hm: (N, K) arg-max distances on the heatmap grid, or None.
        heatmap_width: the grid's width ``heatmap_errors_hm`` refers to.
        log_likelihood: (N,) per-sample flow log-likelihood, or None.
    """

    errors_px: np.ndarray
    norms_px: np.ndarray
    pck_thr: float
    zb_thresholds_px: np.ndarray
    heatmap_errors_hm: np.ndarray | None
    heatmap_width: int
    log_likelihood: np.ndarray | None

    @cached_property
    def pck(self) -> tuple[float, np.ndarray]:
        return pck_from_errors(self.errors_px, self.norms_px, self.pck_thr)

    @cached_property
    def mmpose_auc(self) -> tuple[float, np.ndarray]:
        return auc_mmpose_from_errors(self.errors_px)

    @cached_property
    def zb(self) -> ZBResult:
        return zb_measures_from_errors(self.errors_px, self.zb_thresholds_px)

    @cached_property
    def acc_hm(self) -> tuple[float | None, np.ndarray]:
        if self.heatmap_errors_hm is None:
            return None, np.full(self.errors_px.shape[1], np.nan)
        return heatmap_accuracy_from_errors(self.heatmap_errors_hm, self.heatmap_width)

    @cached_property
    def spearman(self) -> tuple[float | None, float | None]:
        if self.log_likelihood is None:
            return None, None
        rho, pvalue, _ = loglik_epe_spearman(self.log_likelihood, per_sample_epe(self.errors_px))
        return rho, pvalue


def _mean_log_likelihood(m: MetricInputs) -> float | None:
    if m.log_likelihood is None:
        return None
    finite = m.log_likelihood[np.isfinite(m.log_likelihood)]
    return float(finite.mean()) if finite.size else None


MetricFn = Callable[[MetricInputs], float | None]
# The scalar metrics, by name: each is a function of the MetricInputs (None = not defined
# for this run, e.g. no flow head). A new metric is one entry here: it then appears in
# metrics.json, the printed report and `MetricsSummary.values`.
METRICS: dict[str, MetricFn] = {
    "pck": lambda m: m.pck[0],
    "auc": lambda m: m.mmpose_auc[0],
    "epe_mean_px": lambda m: epe_mmpose_from_errors(m.errors_px),
    "zb_auc": lambda m: m.zb.auc,
    "zb_epe_mean_px": lambda m: m.zb.epe_mean_px,
    "zb_epe_median_px": lambda m: m.zb.epe_median_px,
    "acc_hm": lambda m: m.acc_hm[0],
    "loglik_epe_spearman": lambda m: m.spearman[0],
    "loglik_epe_pvalue": lambda m: m.spearman[1],
    "mean_log_likelihood": _mean_log_likelihood,
}
# The per-joint metrics, by name: (K,) arrays (NaN for joints never scored).
PER_JOINT_METRICS: dict[str, Callable[[MetricInputs], np.ndarray]] = {
    "pck": lambda m: m.pck[1],
    "zb_auc": lambda m: m.zb.per_joint_auc,
    "epe_mean_px": lambda m: m.zb.per_joint_epe_mean_px,
    "epe_median_px": lambda m: m.zb.per_joint_epe_median_px,
    "acc_hm": lambda m: m.acc_hm[1],
}
class _MetricValue:
    """A `MetricsSummary` attribute read from its ``values`` by the attribute's name;
    ``missing`` where the value is None (NaN for the figures every evaluation has)."""

    def __init__(self, missing: float | None) -> None:
        self.missing = missing

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, summary: MetricsSummary | None, owner: type | None = None
                ) -> float | None:  # fmt: skip
        if summary is None:
            return self.missing
        value = summary.values.get(self.name)
        return self.missing if value is None else value


@dataclass
class MetricsSummary:
    """Everything :class:`MetricAccumulator` reports. Pixel values in original pixels.

    ``values`` holds the scalar metrics of `METRICS` by name (None where a metric is not
    defined for the run, or not finite); the protocol's figures are also typed attributes
    (``pck``, ``auc``, ``epe_mean_px``, ...; NaN where the value is None). Per-joint lists
    hold None for joints never scored (JSON-friendly). ``to_dict`` is flat: the values next
    to the counts and curves.
    """

    num_samples: int
    num_keypoints: int
    pck_thr: float
    bbox_factor: float
    values: dict[str, float | None]
    mmpose_thresholds_px: list[float] = field(default_factory=list)
    mmpose_pck_curve: list[float] = field(default_factory=list)
    zb_thresholds_px: list[float] = field(default_factory=list)
    zb_pck_curve: list[float] = field(default_factory=list)
    per_joint: dict[str, list[float | None]] = field(default_factory=dict)

    pck = _MetricValue(float("nan"))
    auc = _MetricValue(float("nan"))
    epe_mean_px = _MetricValue(float("nan"))
    zb_auc = _MetricValue(float("nan"))
    zb_epe_mean_px = _MetricValue(float("nan"))
    zb_epe_median_px = _MetricValue(float("nan"))
    acc_hm = _MetricValue(None)
    loglik_epe_spearman = _MetricValue(None)
    loglik_epe_pvalue = _MetricValue(None)
    mean_log_likelihood = _MetricValue(None)

    def to_dict(self) -> dict:
        out = {"num_samples": self.num_samples, "num_keypoints": self.num_keypoints,
               "pck_thr": self.pck_thr, "bbox_factor": self.bbox_factor, **self.values}
        out.update({name: list(getattr(self, name)) for name in (
            "mmpose_thresholds_px", "mmpose_pck_curve", "zb_thresholds_px", "zb_pck_curve")})
        out["per_joint"] = {name: list(v) for name, v in self.per_joint.items()}
        return out


def finite_list(values: np.ndarray) -> list[float | None]:
    """Plain floats for JSON, non-finite values as None."""
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, np.float64)]


def _opt(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


class MetricAccumulator:
    """Collects batches of keypoints (and optionally heatmap errors, likelihoods).

    Usage::

        acc = MetricAccumulator()
        acc.update(pred_px, gt_px, visible, image_size_wh, log_likelihood=ll)
        summary = acc.compute()
    """

    def __init__(
        self,
        pck_thr: float = MMPOSE_PCK_THR,
        bbox_factor: float = MMPOSE_BBOX_FACTOR,
        zb_thresholds_px: np.ndarray = ZB_THRESHOLDS_PX,
        heatmap_width: int = 64,
    ) -> None:
        self.pck_thr = pck_thr
        self.bbox_factor = bbox_factor
        self.zb_thresholds_px = np.asarray(zb_thresholds_px, np.float64)
        self.heatmap_width = heatmap_width
        self._errors: list[np.ndarray] = []
        self._norms: list[np.ndarray] = []
        self._hm_errors: list[np.ndarray] = []
        self._loglik: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(e.shape[0] for e in self._errors)

    def update(
        self,
        pred_px: np.ndarray,
        gt_px: np.ndarray,
        visible: np.ndarray,
        image_size_wh: np.ndarray,
        *,
        heatmap_errors_hm: np.ndarray | None = None,
        log_likelihood: np.ndarray | None = None,
    ) -> np.ndarray:
        """Add a batch.

        Args:
            pred_px: (B, K, 2) predictions in original-image pixels.
            gt_px: (B, K, 2) ground truth in original-image pixels.
            visible: (B, K) bool.
            image_size_wh: (B, 2) or (2,) original image sizes (for the PCK box).
            heatmap_errors_hm: (B, K) output of :func:`heatmap_argmax_errors`, or None.
            log_likelihood: (B,) per-sample log-likelihood, or None (no flow head).
                Give it for every batch or for none.

        Returns:
            (B, K) errors in pixels (NaN where not scored), for per-sample reports.
        """
        errors = keypoint_errors(pred_px, gt_px, visible)
        self._errors.append(errors)
        self._norms.append(gt_bbox_size(gt_px, image_size_wh, self.bbox_factor))
        if heatmap_errors_hm is not None:
            self._hm_errors.append(np.asarray(heatmap_errors_hm, np.float64))
        if log_likelihood is not None:
            self._loglik.append(np.asarray(log_likelihood, np.float64).reshape(-1))
        return errors

    def inputs(self) -> MetricInputs:
        """Everything added so far, as the metrics see it."""
        if not self._errors:
            raise ValueError("no samples were added to the metric accumulator")
        errors = np.concatenate(self._errors)
        loglik = None
        if self._loglik:
            loglik = np.concatenate(self._loglik)
            if loglik.shape[0] != errors.shape[0]:
                raise ValueError(
                    f"log-likelihood given for {loglik.shape[0]} of {errors.shape[0]} samples: "
                    "give it for every batch or for none"
                )
        return MetricInputs(
            errors_px=errors, norms_px=np.concatenate(self._norms), pck_thr=self.pck_thr,
            zb_thresholds_px=self.zb_thresholds_px,
            heatmap_errors_hm=np.concatenate(self._hm_errors) if self._hm_errors else None,
            heatmap_width=self.heatmap_width, log_likelihood=loglik,
        )  # fmt: skip

    def compute(self) -> MetricsSummary:
        """Metrics over everything added so far."""
        m = self.inputs()
        values = {name: _opt(fn(m)) for name, fn in METRICS.items()}
        return MetricsSummary(
            num_samples=int(m.errors_px.shape[0]),
            num_keypoints=int((~np.isnan(m.errors_px)).sum()),
            pck_thr=self.pck_thr,
            bbox_factor=self.bbox_factor,
            values=values,
            mmpose_thresholds_px=finite_list(mmpose_auc_thresholds_px()),
            mmpose_pck_curve=finite_list(m.mmpose_auc[1]),
            zb_thresholds_px=finite_list(m.zb.thresholds_px),
            zb_pck_curve=finite_list(m.zb.pck_curve),
            per_joint={name: finite_list(fn(m)) for name, fn in PER_JOINT_METRICS.items()},
        )


__all__ = [
    "METRICS",
    "PER_JOINT_METRICS",
    "MetricAccumulator",
    "MetricInputs",
    "MetricsSummary",
    "ZBResult",
    "auc_mmpose",
    "epe_mmpose",
    "finite_list",
    "gt_bbox_size",
    "heatmap_accuracy",
    "heatmap_argmax_errors",
    "keypoint_errors",
    "loglik_epe_spearman",
    "pck_mmpose",
    "per_sample_epe",
    "zb_measures",
]
