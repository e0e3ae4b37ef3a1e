"""The evaluation report as text: metrics tables, the confidence block, the calibration fit.

Pure formatting (no I/O): run.py and its modes (`utils/eval_run.py`) print what these return.
"""

from __future__ import annotations

import numpy as np

from utils.confidence import Calibration, ConfidenceSummary
from utils.evaluator import CalibrationFit, HandVsNoHandResult
from utils.joints import JOINT_NAMES, NUM_JOINTS
from utils.metrics import MetricsSummary


def fmt_value(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``; 'n/a' for None, NaN and inf."""
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


# The metrics format_table prints on its own lines; any other `utils.metrics.METRICS` entry
# goes on the 'more' line.
TABLE_METRICS = ("pck", "auc", "epe_mean_px", "zb_auc", "zb_epe_mean_px", "zb_epe_median_px",
                 "acc_hm", "loglik_epe_spearman", "loglik_epe_pvalue", "mean_log_likelihood")


def format_table(m: MetricsSummary, title: str, has_flow: bool) -> str:
    """The printed summary: both protocols, accH, likelihood, other metrics, per-joint table."""
    flow_note = "no flow head"
    more = [f"{name} {fmt_value(value)}" for name, value in m.values.items()
            if name not in TABLE_METRICS]  # fmt: skip
    lines = [
        f"== {title}: {m.num_samples} samples, {m.num_keypoints} visible keypoints "
        "(original-image pixels)",
        f"  MMPose   PCK@{m.pck_thr:g} (box x{m.bbox_factor:g}) {fmt_value(m.pck)}   "
        f"AUC(0-30px) {fmt_value(m.auc)}   EPE mean {fmt_value(m.epe_mean_px, '.2f')} px",
        f"  Z&B      AUC(0-30px, trapz) {fmt_value(m.zb_auc)}   EPE mean "
        f"{fmt_value(m.zb_epe_mean_px, '.2f')} px   EPE median "
        f"{fmt_value(m.zb_epe_median_px, '.2f')} px",
        f"  BiHand   accH (argmax, 3.2 hm px) {fmt_value(m.acc_hm)}",
        "  flow     "
        + (f"mean log-lik {fmt_value(m.mean_log_likelihood, '.1f')}   Spearman(log-lik, EPE) "
           f"{fmt_value(m.loglik_epe_spearman, '.3f')} "
           f"(p={fmt_value(m.loglik_epe_pvalue, '.2g')})"
           if has_flow else f"log-lik: {flow_note}   Spearman(log-lik, EPE): {flow_note}"),
        *([f"  more     {'   '.join(more)}"] if more else []),
        f"  {'joint':<12} {'PCK':>7} {'AUC-ZB':>7} {'EPE':>7} {'median':>7} {'accH':>7}",
    ]  # fmt: skip
    pj = m.per_joint
    for j in range(len(pj["pck"])):
        name = JOINT_NAMES[j] if j < NUM_JOINTS else str(j)
        lines.append(
            f"  {name:<12} {fmt_value(pj['pck'][j], '7.3f')} "
            f"{fmt_value(pj['zb_auc'][j], '7.3f')} {fmt_value(pj['epe_mean_px'][j], '7.2f')} "
            f"{fmt_value(pj['epe_median_px'][j], '7.2f')} {fmt_value(pj['acc_hm'][j], '7.3f')}"
        )
    return "\n".join(lines)


def format_confidence(c: ConfidenceSummary, hand: HandVsNoHandResult | None,
                      calibration: Calibration | None) -> str:  # fmt: skip
    """The printed confidence block: per-image and per-joint scores against the labels."""
    half = min(range(len(c.kept_fractions)), key=lambda i: abs(c.kept_fractions[i] - 0.5))
    lines = [
        f"== confidence: {c.num_images} images, {c.num_failed} failed (fewer than "
        f"{c.failure_joint_fraction:g} of the joints within PCK@{c.pck_thr:g}); "
        f"{c.num_correct_keypoints}/{c.num_keypoints} keypoints within PCK@{c.pck_thr:g}",
        f"  {'per image':<22} {'fail AUROC':>10} {'hand AUROC':>10} "
        f"{'PCK kept':>9} {'AUC kept':>9}  (kept: best {c.kept_fractions[half]:.0%})",
    ]  # fmt: skip
    hand_auroc = {} if hand is None else hand.auroc
    rows = [(name, r.failure_auroc, r.kept) for name, r in c.image_scores.items()]
    rows.append(("oracle (true error)", None, c.oracle))
    for name, fail, kept in rows:
        fail_text = "-" if kept is c.oracle else fmt_value(fail, ".3f")
        hand_text = ("-" if hand is None or kept is c.oracle
                     else fmt_value(hand_auroc.get(name), ".3f"))  # fmt: skip
        lines.append(f"  {name:<22} {fail_text:>10} {hand_text:>10} "
                     f"{fmt_value(kept.pck[half], '.3f'):>9} "
                     f"{fmt_value(kept.auc[half], '.3f'):>9}")  # fmt: skip
    all_kept = c.oracle
    lines.append(f"  {'all images':<22} {'':>10} {'':>10} "
                 f"{fmt_value(all_kept.pck[0], '.3f'):>9} "
                 f"{fmt_value(all_kept.auc[0], '.3f'):>9}")  # fmt: skip
    lines.append(f"  {'per joint':<22} {'AUROC':>10} {'ECE':>10}")
    for name, r in c.joint_scores.items():
        ece = fmt_value(r.ece, ".3f") if r.reliability is not None else "not a prob."
        lines.append(f"  {name:<22} {fmt_value(r.auroc, '.3f'):>10} {ece:>10}")
    if hand is not None:
        kinds = ", ".join(f"{k} {int((hand.negative_kinds == k).sum())}"
                          for k in hand.auroc_by_kind)  # fmt: skip
        lines.append(f"  hand vs no hand: {hand.num_positive} hand crops against "
                     f"{hand.num_negative} crops without a hand ({kinds})")
    if calibration is None:
        lines.append("  calibration: none in the checkpoint, so predictions carry no "
                     "confidence or hand_present (python run.py --calibrate ...)")
    else:
        parts = [f"joint <- {calibration.joint.score}" if calibration.joint else "no joint map",
                 f"hand_present <- {calibration.hand_present.score}" if calibration.hand_present
                 else "no hand_present map"]  # fmt: skip
        lines.append(f"  calibration: {', '.join(parts)}")
    if c.threshold is not None:
        t = c.threshold
        lines.append(f"  threshold: {t.score} >= {t.threshold:g} keeps {t.num_kept}/"
                     f"{c.num_images} images ({t.fraction_kept:.0%}): PCK {fmt_value(t.pck)}   "
                     f"AUC {fmt_value(t.auc)}")
    return "\n".join(lines)


def format_calibration_fit(fit: CalibrationFit) -> str:
    """What a calibration fit found: the joint map with its ECE before and after, and the
    hand_present map (or how to fit one)."""
    joint = fit.calibration.joint
    lines = [f"joint confidence = sigmoid({joint.a:.4g} * heatmap_peak + {joint.b:.4g}) from "
             f"{fit.num_keypoints} keypoints; ECE {fmt_value(fit.ece_before, '.3f')} (peak) -> "
             f"{fmt_value(fit.ece_after, '.3f')} (calibrated, same data)"]  # fmt: skip
    hand = fit.calibration.hand_present
    if hand is not None:
        lines.append(f"hand_present = sigmoid({hand.a:.4g} * {hand.score} + {hand.b:.4g}) from "
                     f"{fit.hand.num_positive} hand and {fit.hand.num_negative} no-hand crops "
                     f"(AUROC {fmt_value(fit.hand.auroc[hand.score], '.3f')}, the best of "
                     f"{', '.join(fit.hand.auroc)})")
    else:
        lines.append("no hand_present map: add --hand_vs_nohand to fit one")
    return "\n".join(lines)
