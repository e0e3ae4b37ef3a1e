"""The files of an evaluation: metrics.json, predictions, COCO results and the curves.

    metrics.json              the checkpoint's entries (`models.CheckpointInfo.to_dict`), the
                              dataset, split, device, precision, speed, both metric
                              summaries, the test-time views, confidence, hand vs no hand,
                              calibration and MANO
    predictions.json          one entry per sample (`SamplePrediction.to_dict`)
    coco_results.json         COCO keypoint results (`coco_results`)
    predictions_flip.json, coco_results_flip.json   the same for the flip test
    pck_curve.png             PCK against the threshold (Z&B and MMPose protocols)
    confidence_curve.png      PCK/AUC of the images kept when dropping the lowest scores
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.loader import CheckpointInfo
from models.mano_head import describe_mano_model
from utils import mano_eval, vis
from utils.evaluator import EvalResult, HandVsNoHandResult, SamplePrediction, confidence_note
from utils.jsonio import write_json
from utils.metrics import MetricsSummary


def coco_results(predictions: Sequence[SamplePrediction]) -> list[dict]:
    """COCO keypoint results (image_id = frame id, category 1, [x, y, score] * 21)."""
    out = []
    for p in predictions:
        kps = np.concatenate([p.kp2d_px, p.scores[:, None]], axis=1).reshape(-1)
        out.append({"image_id": p.frame_id, "category_id": 1,
                    "keypoints": np.round(kps, 3).tolist(), "score": float(np.mean(p.scores))})
    return out


def write_outputs(out: Path, result: EvalResult, info: CheckpointInfo, *, dataset: str,
                  split: str, device: str, precision: str,
                  hand: HandVsNoHandResult | None = None) -> None:  # fmt: skip
    """metrics.json, predictions*.json, coco_results*.json, pck_curve.png and
    confidence_curve.png in ``out`` (see the module docstring).

    Args:
        out: the results folder (exists).
        result: what `utils.evaluator.evaluate` returned.
        info: the evaluated checkpoint.
        dataset, split: what was evaluated (names in metrics.json and the plot titles).
        device, precision: how (recorded in metrics.json).
        hand: the hand-vs-no-hand scores, or None.
    """
    def summary(m: MetricsSummary | None) -> dict | None:
        return None if m is None else m.to_dict()

    metrics = {
        **info.to_dict(), "dataset": dataset, "split": split, "has_flow": result.has_flow,
        "num_samples": result.num_samples, "seconds": result.seconds,
        "images_per_s": result.images_per_s, "device": device, "precision": precision,
        "metrics": summary(result.metrics), "metrics_flip_test": summary(result.metrics_flip),
        "test_time_views": None if result.views is None else result.views.to_dict(),
    }  # fmt: skip
    if not result.has_flow:
        metrics["likelihood_note"] = "no flow head: log-likelihood columns are empty"
    metrics["confidence"] = None if result.confidence is None else result.confidence.to_dict()
    metrics["hand_vs_nohand"] = None if hand is None else hand.to_dict()
    calibration = result.calibration
    metrics["calibration_note"] = confidence_note(
        None if calibration is None else calibration.joint,
        None if calibration is None else calibration.hand_present)
    metrics.update(mano_eval.mano_metrics_entries(
        describe_mano_model(info.model_config), result.mano_metrics, result.metrics_3d))
    write_json(out / "metrics.json", metrics)
    write_json(out / "predictions.json", [p.to_dict() for p in result.predictions])
    write_json(out / "coco_results.json", coco_results(result.predictions))
    curves = {
        "Z&B (<=, trapz)": (result.metrics.zb_thresholds_px, result.metrics.zb_pck_curve),
        "MMPose (<)": (result.metrics.mmpose_thresholds_px, result.metrics.mmpose_pck_curve),
    }
    if result.metrics_flip is not None:
        write_json(out / "predictions_flip.json", [p.to_dict() for p in result.predictions_flip])
        write_json(out / "coco_results_flip.json", coco_results(result.predictions_flip))
        mf = result.metrics_flip
        curves["Z&B, flip test"] = (mf.zb_thresholds_px, mf.zb_pck_curve)
    vis.plot_pck_curves(
        curves, out / "pck_curve.png",
        title=f"{dataset} {split}: AUC MMPose {result.metrics.auc:.3f}, "
        f"Z&B {result.metrics.zb_auc:.3f}",
    )  # fmt: skip
    if result.confidence is not None:
        c = result.confidence
        kept = {name: (r.kept.fractions, r.kept.pck, r.kept.auc)
                for name, r in c.image_scores.items()}  # fmt: skip
        kept["oracle (true error)"] = (c.oracle.fractions, c.oracle.pck, c.oracle.auc)
        vis.plot_kept_curves(kept, out / "confidence_curve.png",
                             title=f"{dataset} {split}: dropping the lowest-scoring images",
                             reference="oracle (true error)")
