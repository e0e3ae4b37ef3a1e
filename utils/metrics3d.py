"""3D joint metrics as pure numpy functions, plus a small accumulator.

Joints are (N, 21, 3) arrays in metres in the canonical order (utils/joints.py); errors
are reported in millimetres. Every joint with a 3D label is scored (3D labels have no
visibility), as in BiHand and hand3d.

MPJPE
    Mean per-joint position error of the root-relative joints (root = wrist, joint 0; no
    scale correction): ``|(pred - pred_0) - (gt - gt_0)|``, mean over joints and samples.
PA-MPJPE
    The same after a per-sample similarity Procrustes alignment (rotation, isotropic scale,
    translation; Umeyama 1991, no reflection) of the prediction onto the ground truth.
BiHand protocol (its run.py: ``pred_joint = pred_jointRS * joint_bone + joint_root``)
    The prediction is made relative to its middle-finger MCP (joint 9, BiHand's
    ``joint_root_idx``) and divided by its wrist-to-middle-MCP length, then scaled by the
    ground truth's length of that bone (``ref_bone_link = (0, 9)``) and placed on the ground
    truth's middle MCP: root and scale come from the ground truth (BiHand's README).
    3D PCK curves on ``linspace(20, 50, 20)`` mm (error <= t), AUC by the trapezoid rule over
    the range / 30 mm, per joint, averaged over joints (hand3d's ``EvalUtil.get_measures(20,
    50, 20)``, `utils.metrics.zb_measures_from_errors`).
Zimmermann & Brox range
    The same aligned errors and curves over ``linspace(0, 50, 20)`` mm (hand3d's 0-50 mm).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from utils.metrics import finite_list, zb_measures_from_errors

ROOT_JOINT = 0  # wrist: the root of MPJPE
BIHAND_ROOT_JOINT = 9  # middle-finger MCP: BiHand's joint_root_idx
BIHAND_BONE = (0, 9)  # BiHand's ref_bone_link: wrist -> middle MCP
BIHAND_THRESHOLDS_MM = np.linspace(20.0, 50.0, 20)
ZB_THRESHOLDS_MM = np.linspace(0.0, 50.0, 20)
PCK_REPORT_MM = (20.0, 30.0, 40.0, 50.0)


def _check(pred_m: np.ndarray, gt_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred_m, gt_m = np.asarray(pred_m, np.float64), np.asarray(gt_m, np.float64)
    if pred_m.shape != gt_m.shape or pred_m.ndim != 3 or pred_m.shape[-1] != 3:
        raise ValueError(f"expected pred and gt joints of the same shape (N, K, 3), got "
                         f"{pred_m.shape} and {gt_m.shape}")
    return pred_m, gt_m


def root_relative(joints_m: np.ndarray, root: int = ROOT_JOINT) -> np.ndarray:
    """(N, K, 3) joints minus their ``root`` joint."""
    joints_m = np.asarray(joints_m, np.float64)
    return joints_m - joints_m[:, root:root + 1]


def mpjpe_errors_mm(pred_m: np.ndarray, gt_m: np.ndarray, root: int = ROOT_JOINT) -> np.ndarray:
    """(N, K) root-relative joint errors in mm (see the module docstring)."""
    pred_m, gt_m = _check(pred_m, gt_m)
    return 1000.0 * np.linalg.norm(root_relative(pred_m, root) - root_relative(gt_m, root),
                                   axis=-1)  # fmt: skip


def procrustes_align(pred_m: np.ndarray, gt_m: np.ndarray) -> np.ndarray:
    """Each prediction moved by the similarity transform that best fits it to the ground truth.

    Least squares over rotation R (det +1), scale s and translation t of
    ``sum_k |s R p_k + t - g_k|^2`` (Umeyama).

    Args:
        pred_m: (N, K, 3) predictions.
        gt_m: (N, K, 3) ground truth.

    Returns:
        (N, K, 3) aligned predictions.
    """
    pred_m, gt_m = _check(pred_m, gt_m)
    mu_p = pred_m.mean(axis=1, keepdims=True)
    mu_g = gt_m.mean(axis=1, keepdims=True)
    p, g = pred_m - mu_p, gt_m - mu_g
    cov = np.einsum("nki,nkj->nij", g, p) / pred_m.shape[1]  # (N, 3, 3): E[g p^T]
    u, sing, vt = np.linalg.svd(cov)
    d = np.ones((pred_m.shape[0], 3))
    d[:, 2] = np.sign(np.linalg.det(u @ vt))  # no reflection
    rot = u @ (d[:, :, None] * vt)
    var_p = (p**2).sum(axis=(1, 2)) / pred_m.shape[1]
    scale = (sing * d).sum(axis=1) / np.maximum(var_p, 1e-18)
    return scale[:, None, None] * np.einsum("nij,nkj->nki", rot, p) + mu_g


def pa_mpjpe_errors_mm(pred_m: np.ndarray, gt_m: np.ndarray) -> np.ndarray:
    """(N, K) joint errors in mm after Procrustes alignment."""
    pred_m, gt_m = _check(pred_m, gt_m)
    return 1000.0 * np.linalg.norm(procrustes_align(pred_m, gt_m) - gt_m, axis=-1)


def bihand_align(pred_m: np.ndarray, gt_m: np.ndarray, root: int = BIHAND_ROOT_JOINT,
                 bone: tuple[int, int] = BIHAND_BONE) -> np.ndarray:  # fmt: skip
    """Predictions with the ground truth's root position and reference-bone length.

    ``(pred - pred_root) / |pred_b1 - pred_b0| * |gt_b1 - gt_b0| + gt_root`` (BiHand's
    evaluation). A prediction whose reference bone has zero length keeps its own scale.
    """
    pred_m, gt_m = _check(pred_m, gt_m)
    pred_len = np.linalg.norm(pred_m[:, bone[1]] - pred_m[:, bone[0]], axis=-1)
    gt_len = np.linalg.norm(gt_m[:, bone[1]] - gt_m[:, bone[0]], axis=-1)
    ratio = np.where(pred_len > 1e-12, gt_len / np.maximum(pred_len, 1e-12), 1.0)
    return ((pred_m - pred_m[:, root:root + 1]) * ratio[:, None, None]
            + gt_m[:, root:root + 1])  # fmt: skip


def bihand_errors_mm(pred_m: np.ndarray, gt_m: np.ndarray) -> np.ndarray:
    """(N, K) errors in mm of the BiHand-aligned predictions."""
    pred_m, gt_m = _check(pred_m, gt_m)
    return 1000.0 * np.linalg.norm(bihand_align(pred_m, gt_m) - gt_m, axis=-1)


def pck_at_mm(errors_mm: np.ndarray, threshold_mm: float) -> float:
    """Fraction of (non-NaN) errors <= threshold, the mean of per-joint fractions."""
    errors_mm = np.asarray(errors_mm, np.float64)
    scored = ~np.isnan(errors_mm)
    count = scored.sum(axis=0)
    hits = ((errors_mm <= threshold_mm) & scored).sum(axis=0)
    per_joint = hits[count > 0] / count[count > 0]
    return float(per_joint.mean()) if per_joint.size else float("nan")


@dataclass
class Metrics3DSummary:
    """What :class:`Metric3DAccumulator` reports (mm; per-joint lists in canonical order).

    Attributes:
        num_samples: samples with 3D labels scored.
        mpjpe_mm, pa_mpjpe_mm: means over samples and joints.
        bihand_auc_20_50: BiHand's 3D AUC over 20-50 mm (aligned, see module docstring).
        zb_auc_0_50: the same curves over 0-50 mm.
        aligned_epe_mean_mm / aligned_epe_median_mm: mean over joints of the per-joint
            mean / median error after BiHand's alignment.
        pck_mm: threshold (mm, as a string) -> 3D PCK of the aligned errors.
        bihand_thresholds_mm / bihand_pck_curve, zb_thresholds_mm / zb_pck_curve: the curves.
        per_joint: 'mpjpe_mm', 'pa_mpjpe_mm', 'aligned_epe_mm', 'auc_20_50', 'auc_0_50'.
    """

    num_samples: int
    mpjpe_mm: float
    pa_mpjpe_mm: float
    bihand_auc_20_50: float
    zb_auc_0_50: float
    aligned_epe_mean_mm: float
    aligned_epe_median_mm: float
    pck_mm: dict[str, float] = field(default_factory=dict)
    bihand_thresholds_mm: list[float] = field(default_factory=list)
    bihand_pck_curve: list[float] = field(default_factory=list)
    zb_thresholds_mm: list[float] = field(default_factory=list)
    zb_pck_curve: list[float] = field(default_factory=list)
    per_joint: dict[str, list[float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _nanmean_joints(errors: np.ndarray) -> np.ndarray:
    count = (~np.isnan(errors)).sum(axis=0)
    sums = np.nansum(errors, axis=0)
    return np.where(count > 0, sums / np.maximum(count, 1), np.nan)


def metrics_3d(pred_m: np.ndarray, gt_m: np.ndarray) -> Metrics3DSummary:
    """All 3D measures of (N, 21, 3) predictions against ground truth (metres)."""
    pred_m, gt_m = _check(pred_m, gt_m)
    if pred_m.shape[0] == 0:
        raise ValueError("no samples with 3D labels to score")
    mpjpe = mpjpe_errors_mm(pred_m, gt_m)
    pa = pa_mpjpe_errors_mm(pred_m, gt_m)
    aligned = bihand_errors_mm(pred_m, gt_m)
    bihand = zb_measures_from_errors(aligned, BIHAND_THRESHOLDS_MM)
    zb = zb_measures_from_errors(aligned, ZB_THRESHOLDS_MM)
    return Metrics3DSummary(
        num_samples=int(pred_m.shape[0]),
        mpjpe_mm=float(mpjpe.mean()),
        pa_mpjpe_mm=float(pa.mean()),
        bihand_auc_20_50=bihand.auc,
        zb_auc_0_50=zb.auc,
        aligned_epe_mean_mm=bihand.epe_mean_px,
        aligned_epe_median_mm=bihand.epe_median_px,
        pck_mm={f"{t:g}": pck_at_mm(aligned, t) for t in PCK_REPORT_MM},
        bihand_thresholds_mm=finite_list(BIHAND_THRESHOLDS_MM),
        bihand_pck_curve=finite_list(bihand.pck_curve),
        zb_thresholds_mm=finite_list(ZB_THRESHOLDS_MM),
        zb_pck_curve=finite_list(zb.pck_curve),
        per_joint={
            "mpjpe_mm": finite_list(_nanmean_joints(mpjpe)),
            "pa_mpjpe_mm": finite_list(_nanmean_joints(pa)),
            "aligned_epe_mm": finite_list(bihand.per_joint_epe_mean_px),
            "auc_20_50": finite_list(bihand.per_joint_auc),
            "auc_0_50": finite_list(zb.per_joint_auc),
        },
    )


class Metric3DAccumulator:
    """Collects batches of 3D joints; rows without a 3D label are skipped.

    Usage::

        acc = Metric3DAccumulator()
        acc.update(pred_m, gt_m, has_3d)
        summary = acc.compute()  # None when no row had a label
    """

    def __init__(self) -> None:
        self._pred: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(p.shape[0] for p in self._pred)

    def update(self, pred_m: np.ndarray, gt_m: np.ndarray, has_3d: np.ndarray) -> None:
        """Add (B, K, 3) predictions and labels; rows with has_3d False or a non-finite
        label are left out."""
        pred_m, gt_m = _check(pred_m, gt_m)
        keep = np.asarray(has_3d, bool).reshape(-1) & np.isfinite(gt_m).all(axis=(1, 2))
        self._pred.append(pred_m[keep])
        self._gt.append(gt_m[keep])

    def compute(self) -> Metrics3DSummary | None:
        """The measures over everything added, or None when nothing had a 3D label."""
        if not len(self):
            return None
        return metrics_3d(np.concatenate(self._pred), np.concatenate(self._gt))


__all__ = [
    "BIHAND_THRESHOLDS_MM",
    "ZB_THRESHOLDS_MM",
    "Metric3DAccumulator",
    "Metrics3DSummary",
    "bihand_align",
    "bihand_errors_mm",
    "metrics_3d",
    "mpjpe_errors_mm",
    "pa_mpjpe_errors_mm",
    "pck_at_mm",
    "procrustes_align",
    "root_relative",
]
