"""Run a model over a DataLoader and score it in original-image pixels.

Path of one batch: the dataset's crops (B, 3, S, S) in [0, 1] (resized to the model's input
size if it differs) and their affines (original -> crop, then the resize) -> the same
`utils.predictor.Predictor` the own-image demo uses (`Predictor.decode`: backend forward,
`HeatmapCodec.decode` of the last stack's heatmaps, inverse affine, undoing crop, rotation
and the left->right mirror; the calibrated confidences) -> original pixels ->
`utils.metrics.MetricAccumulator`. Only the crops come from the dataset (its augmentation
and framing); from the crop on, an evaluation and a photo run the same code.

Flip test (``flip_test=True``): the heatmaps of the image and of its mirror image (mirrored
back) are averaged. Mirroring a hand keeps the identity of its joints, so no channel swap is
needed. In the centre-aligned convention (pixel centres at integers, heatmap pixel
``x_hm = (x + 0.5) / stride - 0.5``) mirroring the crop ``x -> S - 1 - x`` mirrors the heatmap
``x_hm -> h - 1 - x_hm``, i.e. exactly a reversal of the last axis: the averaging is exact,
with no half-pixel shift (`models.runtime.RawOutput.flip_average`). Plain and flip-test
metrics are both computed (same forward pass for the plain part) and reported separately.

Test-time views (``views``; `utils.tta`): each crop is also read zoomed and turned, warped on
the device from the batch's crop; the plain metrics' keypoints are the views' median, every
score still the plain view's. The flip test stays on the plain view.

Confidence (plain pass only; `utils.confidence`): per image the flow's log-likelihood
(``flow_loglik``), the mean heatmap peak (``heatmap_peak_mean``), the mean hand-mask
probability (``hand_mask_mean``) and, with a calibration, the mean calibrated joint confidence
(``joint_confidence_mean``); per joint the heatmap peak (``heatmap_peak``; clipped to [0, 1]
it is the uncalibrated stated probability), the flow's log-likelihood map at the joint
(``flow_loglik_at_joint``) and the calibrated P(joint correct) (``joint_confidence``).
`hand_vs_nohand` scores hand crops against crops without a hand with the same per-image
scores.

MANO head (models with ``model.mano``; `utils.mano_eval`): the head also gets the batch's
crop intrinsics K (at the model's input size); its projected joints are scored with the same
2D protocols (``EvalResult.mano_metrics``), its root-relative 3D joints against ``joints_m``
where ``has_3d`` (``EvalResult.metrics_3d``: MPJPE, PA-MPJPE, 3D PCK/AUC). They come from the
plain pass (the flip test averages heatmaps only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.runtime import RawOutput
from utils.confidence import (
    JOINT_CALIBRATION_SCORE,
    Calibration,
    ConfidenceAccumulator,
    ConfidenceSummary,
    auroc,
    confidence_note,
    expected_calibration_error,
    fit_platt,
    image_scores,
    joint_correct,
    joint_scores,
)
from utils.crop import as_3x3, resize_matrix
from utils.geometry import rescale_px
from utils.mano_eval import ManoBatch, ManoScorer, model_intrinsics
from utils.metrics import (
    MMPOSE_BBOX_FACTOR,
    MetricAccumulator,
    MetricsSummary,
    gt_bbox_size,
    heatmap_argmax_errors,
    per_sample_epe,
)
from utils.metrics3d import Metrics3DSummary
from utils.predictor import CropBatch, Predictor
from utils.tta import TestTimeViews

ACCH_GRID = 64  # heatmap width BiHand's accH threshold (3.2 px) refers to
# The `utils.metrics.METRICS` entries the training log records, and their metrics.jsonl keys.
VALIDATION_METRICS = {"pck": "val_pck", "auc": "val_auc", "epe_mean_px": "val_epe_px"}


@dataclass
class SamplePrediction:
    """One evaluated sample (JSON-ready through :meth:`to_dict`).

    Attributes:
        dataset: dataset name ('rhd' | 'stb' | 'synth').
        frame_id: frame index within its split.
        kp2d_px: (21, 2) prediction in original-image pixels.
        scores: (21,) heatmap maxima.
        log_likelihood: flow log-likelihood (nats), None without a flow head.
        epe_px: mean error over the visible joints (original pixels), None if none visible.
        confidence: (21,) calibrated P(joint within PCK@0.2) in [0, 1], None without a
            calibration.
        hand_present: calibrated P(a hand is in the crop), None without that calibration.
        confidence_note: why `confidence` or `hand_present` is None (None when both exist).
        mano: the MANO head's outputs (`utils.mano_eval.ManoBatch.prediction`: 3D joints,
            projected joints in original pixels, pose, betas, camera), None without a head.
    """

    dataset: str
    frame_id: int
    kp2d_px: np.ndarray
    scores: np.ndarray
    log_likelihood: float | None
    epe_px: float | None
    confidence: np.ndarray | None = None
    hand_present: float | None = None
    confidence_note: str | None = None
    mano: dict | None = None

    def to_dict(self) -> dict:
        out = {
            "dataset": self.dataset,
            "frame_id": self.frame_id,
            "kp2d_px": np.round(self.kp2d_px, 3).tolist(),
            "scores": np.round(self.scores, 5).tolist(),
            "log_likelihood": self.log_likelihood,
            "epe_px": self.epe_px,
            "confidence": None if self.confidence is None
            else np.round(self.confidence, 5).tolist(),
            "hand_present": self.hand_present,
            "confidence_note": self.confidence_note,
        }
        if self.mano is not None:
            out["mano"] = self.mano
        return out


@dataclass
class BatchOutput:
    """Everything the evaluator computed for one batch (given to the ``on_batch`` hook).

    Attributes:
        kp2d_crop_px: (B, 21, 2) predictions in the batch's crop pixels.
        kp2d_orig_px: (B, 21, 2) predictions in original-image pixels.
        scores: (B, 21).
        heatmaps: (B, 21, h, w) last-stack heatmaps (flip-averaged when flip_test).
        mask_prob: (B, h, w) hand-mask probability of the last stack.
        loglik_map: (B, h', w') flow log-likelihood map, or None.
        log_likelihood: (B,), or None.
        errors_px: (B, 21) errors in original pixels (NaN where not visible).
        flip: this output is the flip-test one (its joint confidences are those of the
            averaged heatmaps; hand_present, flow and residual scores the plain pass's).
        joint_confidence: (B, 21) calibrated P(joint correct), or None (no calibration).
        hand_present: (B,) calibrated P(hand present), or None.
        mano: the MANO head's outputs of the plain pass, or None (no head, or flip output).
        residual_confidence: (B, 21) -log sigma of the residual flow head, or None.
    """

    kp2d_crop_px: np.ndarray
    kp2d_orig_px: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray
    mask_prob: np.ndarray
    loglik_map: np.ndarray | None
    log_likelihood: np.ndarray | None
    errors_px: np.ndarray
    flip: bool = False
    joint_confidence: np.ndarray | None = None
    hand_present: np.ndarray | None = None
    mano: ManoBatch | None = None
    residual_confidence: np.ndarray | None = None

    @classmethod
    def of(cls, crops: CropBatch, kp2d_crop_px: np.ndarray, errors_px: np.ndarray, *,
           flip: bool = False, mano: ManoBatch | None = None) -> BatchOutput:  # fmt: skip
        """The hook's view of a batch the `Predictor` decoded."""
        raw = crops.raw
        return cls(kp2d_crop_px=kp2d_crop_px, kp2d_orig_px=crops.kp2d_px, scores=crops.scores,
                   heatmaps=raw.heatmaps, mask_prob=crops.mask_prob.astype(np.float32),
                   loglik_map=raw.loglik_map, log_likelihood=raw.log_likelihood,
                   errors_px=errors_px, flip=flip, joint_confidence=crops.joint_confidence,
                   hand_present=crops.hand_present, mano=mano,
                   residual_confidence=crops.residual_confidence)  # fmt: skip


@dataclass
class EvalResult:
    """Result of :func:`evaluate`.

    Attributes:
        metrics: plain (single-view) metrics.
        predictions: per-sample predictions of the plain pass (empty if not collected).
        metrics_flip: flip-test metrics, or None.
        predictions_flip: per-sample flip-test predictions (empty if none).
        has_flow: the model has a flow head (likelihood columns are meaningful).
        num_samples: samples evaluated.
        seconds: wall time of the loop (data loading included).
        confidence: confidence metrics of the plain pass (None if no image had a scored
            joint).
        calibration: the calibration applied, or None.
        views: the test-time views merged into ``metrics``, or None (the plain crop).
        mano_metrics: 2D metrics of the MANO head's projected joints (same protocols as
            ``metrics``), or None without a head.
        metrics_3d: 3D metrics of the MANO head's joints, or None (no head, or no sample
            with 3D labels).
    """

    metrics: MetricsSummary
    predictions: list[SamplePrediction] = field(default_factory=list)
    metrics_flip: MetricsSummary | None = None
    predictions_flip: list[SamplePrediction] = field(default_factory=list)
    has_flow: bool = False
    num_samples: int = 0
    seconds: float = 0.0
    confidence: ConfidenceSummary | None = None
    calibration: Calibration | None = None
    views: TestTimeViews | None = None
    mano_metrics: MetricsSummary | None = None
    metrics_3d: Metrics3DSummary | None = None

    @property
    def images_per_s(self) -> float:
        return self.num_samples / self.seconds if self.seconds > 0 else float("nan")

    def validation_row(self) -> dict[str, Any]:
        """The training log's validation entries (metrics.jsonl keys 'val_*').

        PCK@0.2, AUC and EPE of the plain pass, samples, mean flow log-likelihood (None
        without a flow) and seconds; with a MANO head also its projection's PCK / AUC / EPE,
        3D MPJPE (mm) and BiHand 3D AUC (20-50 mm), None where there are no 3D labels.
        """
        m = self.metrics
        # NaN, not None, for a metric without a value: the trainer compares val_auc.
        row: dict[str, Any] = {key: float("nan") if m.values.get(name) is None
                               else m.values[name] for name, key in VALIDATION_METRICS.items()}
        row.update({
            "val_samples": self.num_samples,
            "val_mean_loglik": m.mean_log_likelihood,
            "val_seconds": self.seconds,
        })  # fmt: skip
        if self.mano_metrics is not None:
            m3 = self.metrics_3d
            row.update({
                "val_mano_pck": self.mano_metrics.pck,
                "val_mano_auc": self.mano_metrics.auc,
                "val_mano_epe_px": self.mano_metrics.epe_mean_px,
                "val_mano_mpjpe_mm": None if m3 is None else m3.mpjpe_mm,
                "val_mano_auc3d": None if m3 is None else m3.bihand_auc_20_50,
            })  # fmt: skip
        return row


def model_to_crop_px(kp_model_px: np.ndarray, model_size: int, crop_size: int) -> np.ndarray:
    """Keypoints in the model-input pixels -> the dataset crop's pixels (centre-aligned).

    The model input is the crop resized from ``crop_size`` to ``model_size`` pixels.
    """
    return rescale_px(kp_model_px, crop_size / model_size)


def resize_to_model(image: torch.Tensor, model_size: int) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, model_size, model_size), centre-aligned (no-op if equal)."""
    if image.shape[-1] == model_size and image.shape[-2] == model_size:
        return image
    return F.interpolate(
        image, size=(model_size, model_size), mode="bilinear", align_corners=False,
        antialias=True,
    )  # fmt: skip


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _resize_heatmaps(heatmaps: torch.Tensor, size: int) -> torch.Tensor:
    if heatmaps.shape[-1] == size:
        return heatmaps
    return F.interpolate(heatmaps, size=(size, size), mode="bilinear", align_corners=False)


def model_affines(crop_affines: np.ndarray, crop_size: int, model_size: int) -> np.ndarray:
    """(B, 3, 3) original -> model input: the batch's crop affines, then the crop resized
    to the model's input (centre-aligned, `resize_to_model`)."""
    return resize_matrix(model_size / crop_size) @ as_3x3(crop_affines)


def score_batch(crops: CropBatch, batch: dict, accumulator: MetricAccumulator, model_size: int
                ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Add a decoded batch to the accumulator, against the batch's labels.

    Args:
        crops: the batch decoded by the `Predictor` (keypoints in original pixels).
        batch: a collated batch (datasets.base.SAMPLE_KEYS; uses image, heatmaps,
            heatmap_weights, visible, kp2d_orig_px, orig_size_wh).
        accumulator: receives the batch.
        model_size: the model's input side.

    Returns:
        (kp2d_crop_px (B, 21, 2) in the batch's crop pixels, errors_px (B, 21)).
    """
    crop_size = int(batch["image"].shape[-1])
    kp_crop = model_to_crop_px(crops.kp_model_px, model_size, crop_size)
    # accH compares argmaxes on the target's grid; the errors are rescaled to a 64 grid so the
    # accumulator's threshold (width / 10 * 0.5 = 3.2 px) holds for any target size.
    gt_heatmaps = batch["heatmaps"]
    gt_size = int(gt_heatmaps.shape[-1])
    hm_errors = heatmap_argmax_errors(
        _np(_resize_heatmaps(torch.from_numpy(crops.raw.heatmaps), gt_size)),
        _np(gt_heatmaps),
        _np(batch["heatmap_weights"]),
    ) * (ACCH_GRID / gt_size)
    errors = accumulator.update(
        crops.kp2d_px,
        _np(batch["kp2d_orig_px"]),
        batch["visible"].cpu().numpy().astype(bool),
        batch["orig_size_wh"].cpu().numpy(),
        heatmap_errors_hm=hm_errors,
        log_likelihood=crops.raw.log_likelihood,
    )
    return kp_crop, errors


def _predictions(batch: dict, crops: CropBatch, errors: np.ndarray) -> list[SamplePrediction]:
    names, frame_ids = batch["dataset"], batch["frame_id"]
    epe = per_sample_epe(errors)
    loglik, joint_conf, hand_present = (crops.raw.log_likelihood, crops.joint_confidence,
                                        crops.hand_present)  # fmt: skip
    note = confidence_note(joint_conf, hand_present)
    return [
        SamplePrediction(
            dataset=str(names[i]),
            frame_id=int(frame_ids[i]),
            kp2d_px=crops.kp2d_px[i],
            scores=crops.scores[i],
            log_likelihood=None if loglik is None else float(loglik[i]),
            epe_px=None if np.isnan(epe[i]) else float(epe[i]),
            confidence=None if joint_conf is None else joint_conf[i],
            hand_present=None if hand_present is None else float(hand_present[i]),
            confidence_note=note,
        )
        for i in range(len(crops))
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict],
    *,
    flip_test: bool = False,
    collect_predictions: bool = True,
    max_batches: int | None = None,
    bbox_factor: float = MMPOSE_BBOX_FACTOR,
    on_batch: Callable[[int, dict, BatchOutput], None] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    calibration: Calibration | None = None,
    confidence_threshold: tuple[str, float] | None = None,
    mano_fit_steps: int = 0,
    views: TestTimeViews | None = None,
) -> EvalResult:
    """Evaluate a HandFlowNet-like model on a loader of collated samples.

    The device is the model's (inputs are moved to it); the model's training mode is
    restored afterwards, so the training loop can call this for validation.

    Args:
        model: returns an object with ``heatmaps`` (list, last = final), ``masks`` (list)
            and ``flow`` (None or with ``log_likelihood`` (B,) and ``loglik_map``); must have
            ``cfg.input_size`` (the `Predictor`'s codec: `HeatmapCodec.for_model`).
        loader: yields collated batches with the keys of datasets.base.SAMPLE_KEYS.
        flip_test: also compute flip-test metrics (one extra forward pass per batch).
        collect_predictions: keep per-sample predictions.
        max_batches: stop after this many batches (None: all).
        bbox_factor: enlargement of the ground-truth keypoint box for PCK (MMPose: 1.2).
        on_batch: hook called with (batch index, batch, plain BatchOutput) after each batch
            (e.g. visualisation); called a second time with the flip output when flip_test.
        progress: optional wrapper of the loader (e.g. tqdm).
        calibration: maps to calibrated joint confidence and hand_present, or None.
        confidence_threshold: (per-image score name, value): also report PCK/AUC of the
            images scoring at least the value (``EvalResult.confidence.threshold``).
        mano_fit_steps: the MANO head's test-time fit to the heatmap keypoints
            (`models.mano_head.ManoHead.fit`; 0: its regression).
        views: test-time views of each crop (`utils.tta`), merged into the plain metrics'
            keypoints; None: the plain crop only. The flip test stays one plain view.

    Returns:
        An :class:`EvalResult`.
    """
    cfg = model.cfg
    predictor = Predictor.from_model(model, calibration=calibration,
                                     mano_fit_steps=mano_fit_steps, views=views)  # fmt: skip
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(bbox_factor=bbox_factor, heatmap_width=ACCH_GRID)
    acc_flip = (
        MetricAccumulator(bbox_factor=bbox_factor, heatmap_width=ACCH_GRID) if flip_test else None
    )
    conf_acc = ConfidenceAccumulator(pck_thr=acc.pck_thr)
    preds: list[SamplePrediction] = []
    preds_flip: list[SamplePrediction] = []
    has_flow = getattr(model, "flow", None) is not None
    has_mano = getattr(model, "mano", None) is not None
    mano_scorer = ManoScorer(bbox_factor) if has_mano else None
    start = time.perf_counter()
    n = 0
    try:
        for b, batch in enumerate(progress(loader) if progress else loader):
            if max_batches is not None and b >= max_batches:
                break
            image = resize_to_model(batch["image"].to(device), cfg.input_size)
            crop_size = int(batch["image"].shape[-1])
            affines = model_affines(_np(batch["affine"]), crop_size, cfg.input_size)
            K = model_intrinsics(batch, cfg.input_size, device) if has_mano else None
            crops = predictor.run_crops(image, affines, K)
            raw = crops.raw
            kp_crop, errors = score_batch(crops, batch, acc, cfg.input_size)
            n += len(crops)
            _score_confidence(conf_acc, batch, crops, kp_crop, errors, bbox_factor)
            mano = mano_mpjpe = None
            if mano_scorer is not None and raw.mano is not None:
                mano = ManoBatch.from_output(raw.mano, _np(batch["affine"]), cfg.input_size,
                                             crop_size)  # fmt: skip
                mano_mpjpe = mano_scorer.update(mano, batch)
            if collect_predictions:
                batch_preds = _predictions(batch, crops, errors)
                if mano is not None:
                    for i, pred in enumerate(batch_preds):
                        pred.mano = mano.prediction(i, None if np.isnan(mano_mpjpe[i])
                                                    else float(mano_mpjpe[i]))  # fmt: skip
                preds.extend(batch_preds)
            if on_batch is not None:
                on_batch(b, batch, BatchOutput.of(crops, kp_crop, errors, mano=mano))
            if acc_flip is not None:
                mirrored = predictor.backend(torch.flip(image, dims=[-1]), with_mano=False)
                crops_f = predictor.decode(RawOutput.flip_average(raw, mirrored), affines)
                # Whether the crop shows a hand is read from the plain pass, like its flow and
                # residual scores: the mirror of a right hand is a left hand to the model.
                crops_f.hand_present = crops.hand_present
                kp_crop_f, errors_f = score_batch(crops_f, batch, acc_flip, cfg.input_size)
                if collect_predictions:
                    preds_flip.extend(_predictions(batch, crops_f, errors_f))
                if on_batch is not None:
                    on_batch(b, batch, BatchOutput.of(crops_f, kp_crop_f, errors_f, flip=True))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if n == 0:
        raise ValueError("the evaluation loader yielded no samples")
    mano_metrics, metrics_3d = mano_scorer.compute() if mano_scorer is not None else (None, None)
    return EvalResult(
        metrics=acc.compute(),
        predictions=preds,
        metrics_flip=acc_flip.compute() if acc_flip is not None else None,
        predictions_flip=preds_flip,
        has_flow=has_flow,
        num_samples=n,
        seconds=seconds,
        confidence=conf_acc.compute(confidence_threshold) if conf_acc.num_labelled else None,
        calibration=calibration,
        views=predictor.views,
        mano_metrics=mano_metrics,
        metrics_3d=metrics_3d,
    )


def _score_confidence(conf_acc: ConfidenceAccumulator, batch: dict, crops: CropBatch,
                      kp_crop: np.ndarray, errors: np.ndarray, bbox_factor: float) -> None:
    """Add one batch's confidence scores to the accumulator."""
    per_joint, probs = joint_scores(crops.scores, kp_crop, int(batch["image"].shape[-1]),
                                    crops.raw.loglik_map, crops.joint_confidence,
                                    crops.residual_confidence)  # fmt: skip
    norms = gt_bbox_size(_np(batch["kp2d_orig_px"]), batch["orig_size_wh"].cpu().numpy(),
                         bbox_factor)  # fmt: skip
    conf_acc.update(errors, norms, image_scores=crops.image_scores(), joint_scores=per_joint,
                    joint_probs=probs)  # fmt: skip


@dataclass
class HandVsNoHandResult:
    """How well each per-image score tells crops with a hand from crops without one.

    Attributes:
        num_positive: hand crops scored.
        num_negative: crops without a hand scored.
        auroc: score name -> AUROC for 'hand present' over all negatives.
        auroc_by_kind: negative kind (e.g. 'real', 'synthetic') -> score name -> AUROC of
            the hand crops against the negatives of that kind.
        positive_scores: score name -> (num_positive,) values (for calibration).
        negative_scores: score name -> (num_negative,) values.
        negative_kinds: (num_negative,) kind of each negative.
    """

    num_positive: int
    num_negative: int
    auroc: dict[str, float | None]
    auroc_by_kind: dict[str, dict[str, float | None]]
    positive_scores: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    negative_scores: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    negative_kinds: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, str))

    def to_dict(self) -> dict:
        """Counts and AUROCs (the raw scores are left out)."""
        counts = {str(k): int((self.negative_kinds == k).sum())
                  for k in dict.fromkeys(self.negative_kinds.tolist())}  # fmt: skip
        return {"num_positive": self.num_positive, "num_negative": self.num_negative,
                "num_negative_by_kind": counts, "auroc": dict(self.auroc),
                "auroc_by_kind": {k: dict(v) for k, v in self.auroc_by_kind.items()}}


@torch.no_grad()
def score_images(
    model: nn.Module,
    loader: Iterable[dict],
    *,
    max_batches: int | None = None,
    calibration: Calibration | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The per-image scores of :func:`image_scores` over a loader of image batches.

    Args:
        model: as for :func:`evaluate`.
        loader: batches with 'image' (B, 3, S, S) in [0, 1] and optionally 'kind' (B,) str.
        max_batches: stop after this many batches.
        calibration: adds 'joint_confidence_mean' when it has a joint map.

    Returns:
        (name -> (N,) scores, (N,) kind of each image; 'hand' where the batch has no 'kind').
    """
    predictor = Predictor.from_model(model, calibration=calibration)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    kinds: list[str] = []
    try:
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            image = resize_to_model(batch["image"].to(device), model.cfg.input_size)
            # Only the per-image scores are needed: the MANO head is skipped, and the crops
            # have no original image (identity affines).
            crops = predictor.decode(predictor.backend(image, with_mano=False),
                                     np.broadcast_to(np.eye(3), (len(image), 3, 3)))
            for name, values in crops.image_scores().items():
                parts.setdefault(name, []).append(values)
            kinds.extend(str(k) for k in batch.get("kind", ["hand"] * len(crops)))
    finally:
        model.train(was_training)
    if not kinds:
        raise ValueError("the loader yielded no images to score")
    return {k: np.concatenate(v) for k, v in parts.items()}, np.array(kinds)


class ImageScoreCollector:
    """An :func:`evaluate` ``on_batch`` hook keeping the per-image scores of the plain pass,
    so :func:`hand_vs_nohand` need not run the positives through the model again."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {}

    def __call__(self, _: int, batch: dict, out: BatchOutput) -> None:
        if out.flip:
            return
        for name, values in image_scores(out.scores, out.mask_prob, out.log_likelihood,
                                         out.joint_confidence,
                                         out.residual_confidence).items():  # fmt: skip
            self._parts.setdefault(name, []).append(values)

    def scores(self) -> dict[str, np.ndarray]:
        """name -> (N,) over the batches seen."""
        return {k: np.concatenate(v) for k, v in self._parts.items()}


def chain_hooks(*hooks: Callable[[int, dict, BatchOutput], None] | None
                ) -> Callable[[int, dict, BatchOutput], None]:  # fmt: skip
    """One ``on_batch`` hook calling each given hook (None entries skipped) in order."""
    active = [h for h in hooks if h is not None]

    def call(b: int, batch: dict, out: BatchOutput) -> None:
        for hook in active:
            hook(b, batch, out)

    return call


def hand_vs_nohand(
    model: nn.Module,
    positives: Iterable[dict] | dict[str, np.ndarray],
    negatives: Iterable[dict],
    *,
    max_batches: int | None = None,
    calibration: Calibration | None = None,
) -> HandVsNoHandResult:
    """AUROC of every per-image score for hand crops (positives) against crops without a hand.

    Args:
        model: as for :func:`evaluate`.
        positives: batches of hand crops (e.g. the evaluation loader), or their per-image
            scores already computed (:class:`ImageScoreCollector`; same calibration).
        negatives: batches of crops without a hand with a 'kind' key
            (`datasets.negatives.NoHandDataset`).
        max_batches: per loader, stop after this many batches.
        calibration: adds the calibrated 'joint_confidence_mean' score.
    """
    if isinstance(positives, dict):
        pos = positives
    else:
        pos, _ = score_images(model, positives, max_batches=max_batches, calibration=calibration)
    neg, kinds = score_images(model, negatives, max_batches=max_batches,
                              calibration=calibration)  # fmt: skip

    def area(neg_mask: np.ndarray) -> dict[str, float | None]:
        out = {}
        for name, values in pos.items():
            labels = np.concatenate([np.ones(values.size, bool), np.zeros(neg_mask.sum(), bool)])
            value = auroc(np.concatenate([values, neg[name][neg_mask]]), labels)
            out[name] = None if np.isnan(value) else value
        return out

    return HandVsNoHandResult(
        num_positive=int(next(iter(pos.values())).size),
        num_negative=int(kinds.size),
        auroc=area(np.ones(kinds.size, bool)),
        auroc_by_kind={str(k): area(kinds == k) for k in dict.fromkeys(kinds.tolist())},
        positive_scores=pos,
        negative_scores=neg,
        negative_kinds=kinds,
    )


@dataclass
class CalibrationFit:
    """A fitted calibration and how it did on the data it was fitted on.

    Attributes:
        calibration: the maps (store with ``Calibration.to_dict()``).
        num_keypoints: scored keypoints the joint map was fitted on.
        ece_before: ECE of the heatmap peak clipped to [0, 1] on those keypoints.
        ece_after: ECE of the calibrated joint confidence on them (in-sample).
        hand: the hand-vs-no-hand scores the hand map was fitted on, or None.
    """

    calibration: Calibration
    num_keypoints: int
    ece_before: float | None
    ece_after: float | None
    hand: HandVsNoHandResult | None = None

    def to_dict(self) -> dict:
        return {"calibration": self.calibration.to_dict(), "num_keypoints": self.num_keypoints,
                "ece_before": self.ece_before, "ece_after": self.ece_after,
                "hand_vs_nohand": None if self.hand is None else self.hand.to_dict()}


def fit_calibration(
    model: nn.Module,
    loader: Iterable[dict],
    *,
    negatives: Iterable[dict] | None = None,
    max_batches: int | None = None,
    bbox_factor: float = MMPOSE_BBOX_FACTOR,
    fitted_on: dict | None = None,
) -> CalibrationFit:
    """Fit the joint map (heatmap peak -> P(joint within PCK@0.2)) on ``loader`` and, with
    ``negatives``, the hand map (a per-image score -> P(hand present)).

    The hand map uses the per-image score with the highest hand-vs-no-hand AUROC on this
    data, with the two classes weighted equally (P = 0.5 where a hand and no hand are
    equally likely). Fit on a validation split, not the split you report.

    Args:
        model: as for :func:`evaluate`.
        loader: hand crops with labels (the batches of :func:`evaluate`).
        negatives: crops without a hand (`datasets.negatives.NoHandDataset`), or None.
        max_batches: per loader, stop after this many batches.
        bbox_factor: PCK box enlargement.
        fitted_on: what the data was, stored with the calibration (``{map name: record}``).
    """
    peaks: list[np.ndarray] = []
    correct: list[np.ndarray] = []
    collector = ImageScoreCollector()

    def collect(_: int, batch: dict, out: BatchOutput) -> None:
        norms = gt_bbox_size(_np(batch["kp2d_orig_px"]), batch["orig_size_wh"].cpu().numpy(),
                             bbox_factor)  # fmt: skip
        right, scored = joint_correct(out.errors_px, norms)
        peaks.append(out.scores[scored])
        correct.append(right[scored])

    evaluate(model, loader, collect_predictions=False, max_batches=max_batches,
             bbox_factor=bbox_factor, on_batch=chain_hooks(collect, collector))  # fmt: skip
    peak, right = np.concatenate(peaks), np.concatenate(correct)
    joint = fit_platt(peak, right, score=JOINT_CALIBRATION_SCORE)
    hand = hand_map = None
    if negatives is not None:
        hand = hand_vs_nohand(model, collector.scores(), negatives, max_batches=max_batches)
        usable = {k: v for k, v in hand.auroc.items() if v is not None}
        if not usable:
            raise ValueError("hand-vs-no-hand AUROC is undefined for every score: no "
                             "positives or no negatives were scored")
        best = max(usable, key=usable.get)
        values = np.concatenate([hand.positive_scores[best], hand.negative_scores[best]])
        labels = np.concatenate([np.ones(hand.num_positive, bool),
                                 np.zeros(hand.num_negative, bool)])  # fmt: skip
        hand_map = fit_platt(values, labels, score=best, balanced=True)
    calibration = Calibration(joint=joint, hand_present=hand_map, fitted_on=dict(fitted_on or {}))
    return CalibrationFit(
        calibration=calibration,
        num_keypoints=int(peak.size),
        ece_before=_finite(expected_calibration_error(np.clip(peak, 0.0, 1.0), right)),
        ece_after=_finite(expected_calibration_error(joint(peak), right)),
        hand=hand,
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
